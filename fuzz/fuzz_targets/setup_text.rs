//! `AdapterSetup::parse` on arbitrary text: never panics; what parses prints back to itself.
#![no_main]

use burn_adapters::AdapterSetup;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(setup) = AdapterSetup::parse(text) {
        let printed = setup.to_string();
        let again = AdapterSetup::parse(&printed).expect("the printed form parses");
        assert_eq!(again, setup, "{printed}");
        let _ = setup.parallel_channels();
    }
});
