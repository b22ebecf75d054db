//! `AdapterConfig::load` resolves a preset name before looking for a file, as AdapterHub does:
//! a file called `lora` in the working directory does not change what `"lora"` means. (Its own
//! test binary, because it changes the working directory of the process.)

use burn_adapters::config::LoRAConfig;
use burn_adapters::prelude::*;

#[test]
fn presets_come_before_files_of_the_same_name() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lora");
    let bottleneck = r#"{"mh_adapter": true, "output_adapter": false, "reduction_factor": 2, "non_linearity": "relu"}"#;
    std::fs::write(&file, bottleneck).unwrap();
    std::env::set_current_dir(dir.path()).unwrap();
    assert_eq!(
        AdapterConfig::load("lora").unwrap(),
        AdapterConfig::Lora(LoRAConfig::lora())
    );
    // The same file is read when named by a path that is not a preset name.
    assert!(matches!(
        AdapterConfig::load("./lora").unwrap(),
        AdapterConfig::Bottleneck(_)
    ));
}
