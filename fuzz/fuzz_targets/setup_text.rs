//! `AdapterSetup::parse` and the fusion names (`"a,b"`, `"Fuse[a, b]"`) on arbitrary text: never
//! panic; what parses prints back to itself, and a parsed setup compiles into a plan whose routing
//! covers every row of a batch once.
#![no_main]

use burn_adapters::__private::route_rows;
use burn_adapters::{AdapterSetup, FusionKey, IntoFusionKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(key) = text.into_fusion_key() {
        let again = FusionKey::parse(&key.to_string()).expect("a fusion key's name parses");
        assert_eq!(again, key);
    }
    if let Ok(setup) = AdapterSetup::parse(text) {
        let printed = setup.to_string();
        let again = AdapterSetup::parse(&printed).expect("the printed form parses");
        assert_eq!(again, setup, "{printed}");
        for batch in [0, 1, 3, 8] {
            let mut rows = route_rows(&setup, batch);
            rows.sort_unstable();
            assert_eq!(rows, (0..batch).collect::<Vec<_>>(), "{printed}, batch {batch}");
        }
    }
});
