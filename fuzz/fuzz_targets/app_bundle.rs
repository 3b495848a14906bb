#![no_main]
//! App bundles arrive from Administrators (`PUT /app/userDefinedEndpoints`) and
//! members (`set_js_app`): any bytes either parse into a bundle whose rows rebuild
//! an equal bundle, or are refused with a message; never a panic.
use covenant_app::{AppBundle, ENDPOINTS, MODULES};
use covenant_kv::Store;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(bundle) = AppBundle::from_json(data) else {
        return;
    };
    let rows = bundle.rows();
    let store = Store::new();
    let mut tx = store.begin();
    for (name, source) in &rows.modules {
        tx.put(MODULES, name.as_bytes(), source.as_bytes());
    }
    for (key, props) in &rows.endpoints {
        tx.put(ENDPOINTS, key.as_bytes(), props);
    }
    if store.commit(tx, covenant_types::View(1)).is_ok() {
        let back = AppBundle::from_store(&store);
        assert_eq!(back.modules.len(), rows.modules.len());
        assert!(covenant_app::App::load(&store).is_ok());
    }
});
