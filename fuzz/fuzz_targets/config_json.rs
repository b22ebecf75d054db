//! `AdapterConfig::from_json` and `FusionConfig::load` on arbitrary JSON: never panic.
#![no_main]

use burn_adapters::AdapterConfig;
use burn_adapters::config::FusionConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    if let Ok(config) = AdapterConfig::from_json(&value) {
        let again = AdapterConfig::from_json(&config.to_json()).expect("its JSON loads again");
        assert_eq!(again, config);
    }
    let _ = FusionConfig::load(&value.to_string());
});
