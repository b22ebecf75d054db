//! `AdapterConfig::load` on arbitrary text: never panics; what parses validates and round-trips
//! through JSON.
#![no_main]

use burn_adapters::AdapterConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // A path-shaped input would be read from disk; the fuzzer only exercises the parsers.
    if std::path::Path::new(text).exists() {
        return;
    }
    if let Ok(config) = AdapterConfig::load(text) {
        config.validate().expect("a loaded config is valid");
        let again = AdapterConfig::from_json(&config.to_json()).expect("its JSON loads again");
        assert_eq!(again, config);
    }
});
