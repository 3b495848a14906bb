//! App bundles as clients send them (`set_js_app`'s `args.bundle`, ACL's
//! `PUT /app/userDefinedEndpoints`) and read them back (`GET`): the endpoints'
//! metadata and the modules, checked before anything is stored, and turned into
//! (or rebuilt from) the rows of [`MODULES`] and [`ENDPOINTS`].

use std::collections::BTreeMap;

use covenant_kv::Store;
use serde::{Deserialize, Serialize};

use crate::{module_name, parse_template, EndpointProperties, ENDPOINTS, MODULES};

/// HTTP methods an endpoint may be declared for.
const METHODS: [&str; 7] = ["GET", "PUT", "POST", "DELETE", "PATCH", "HEAD", "OPTIONS"];

/// `{"metadata":{"endpoints":{path:{method:props}}},"modules":[{"name","module"}]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppBundle {
    pub metadata: Metadata,
    pub modules: Vec<ModuleDef>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    /// Path template → lower-case method → properties.
    pub endpoints: BTreeMap<String, BTreeMap<String, EndpointProperties>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleDef {
    pub name: String,
    pub module: String,
}

/// The rows a bundle is stored as: modules (name → source) and endpoints
/// (`"<METHOD> <path>"` → properties JSON).
pub struct BundleRows {
    pub modules: Vec<(String, String)>,
    pub endpoints: Vec<(String, Vec<u8>)>,
}

impl AppBundle {
    /// Parses and checks a bundle; the message says what is wrong with it.
    pub fn from_json(raw: &[u8]) -> Result<AppBundle, String> {
        let bundle: AppBundle = serde_json::from_slice(raw).map_err(|e| {
            format!("not an app bundle ({{\"metadata\":{{\"endpoints\"}},\"modules\"}}): {e}")
        })?;
        bundle.check()?;
        Ok(bundle)
    }

    /// Every endpoint's method is known, its path a valid template, its module
    /// in the bundle; module names are unique and non-empty.
    pub fn check(&self) -> Result<(), String> {
        let mut names = std::collections::BTreeSet::new();
        for m in &self.modules {
            let name = module_name(&m.name);
            if name.is_empty() {
                return Err("every module needs a non-empty name".into());
            }
            if !names.insert(name) {
                return Err(format!("module {} appears twice", m.name));
            }
        }
        for (path, methods) in &self.metadata.endpoints {
            parse_template(path)?;
            for (method, props) in methods {
                if !METHODS.contains(&method.to_ascii_uppercase().as_str()) {
                    return Err(format!("endpoint {path}: unknown method {method}"));
                }
                if !names.contains(&module_name(&props.js_module)) {
                    return Err(format!(
                        "endpoint {method} {path}: module {} is not in the bundle",
                        props.js_module
                    ));
                }
            }
        }
        Ok(())
    }

    /// What to write (after clearing both maps) to deploy this bundle.
    pub fn rows(&self) -> BundleRows {
        let modules = self
            .modules
            .iter()
            .map(|m| (module_name(&m.name), m.module.clone()))
            .collect();
        let mut endpoints = Vec::new();
        for (path, methods) in &self.metadata.endpoints {
            for (method, props) in methods {
                let value = serde_json::to_vec(props).unwrap_or_default();
                endpoints.push((format!("{} {path}", method.to_ascii_uppercase()), value));
            }
        }
        BundleRows { modules, endpoints }
    }

    /// The bundle deployed in `store` (empty when none is). Rows that do not parse
    /// are skipped: they were checked when written.
    pub fn from_store(store: &Store) -> AppBundle {
        let mut endpoints: BTreeMap<String, BTreeMap<String, EndpointProperties>> = BTreeMap::new();
        for (key, value) in store.entries(ENDPOINTS) {
            let key = String::from_utf8_lossy(&key).into_owned();
            let Some((method, path)) = key.split_once(' ') else {
                continue;
            };
            if let Ok(props) = serde_json::from_slice(&value) {
                endpoints
                    .entry(path.to_string())
                    .or_default()
                    .insert(method.to_ascii_lowercase(), props);
            }
        }
        let modules = store
            .entries(MODULES)
            .into_iter()
            .map(|(k, v)| ModuleDef {
                name: String::from_utf8_lossy(&k).into_owned(),
                module: String::from_utf8_lossy(&v).into_owned(),
            })
            .collect();
        AppBundle {
            metadata: Metadata { endpoints },
            modules,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn bundle(v: serde_json::Value) -> Result<AppBundle, String> {
        AppBundle::from_json(v.to_string().as_bytes())
    }

    #[test]
    fn a_good_bundle_round_trips_through_its_rows() {
        let b = bundle(json!({
            "metadata": {"endpoints": {"/a/{id}": {"get": {"js_module": "m.js", "js_function": "f", "mode": "readonly"}},
                                        "/b": {"POST": {"js_module": "/m.js", "js_function": "g", "openapi_hidden": true,
                                                        "redirection_strategy": "to_primary"}}}},
            "modules": [{"name": "m.js", "module": "export function f() {}"}]
        }))
        .unwrap();
        let rows = b.rows();
        assert_eq!(
            rows.modules,
            vec![("m.js".to_string(), "export function f() {}".to_string())]
        );
        let keys: Vec<&str> = rows.endpoints.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, vec!["GET /a/{id}", "POST /b"]);
        let mut ws = covenant_kv::WriteSet::default();
        for (k, v) in &rows.modules {
            ws.put(MODULES, k.as_bytes(), v.as_bytes());
        }
        for (k, v) in &rows.endpoints {
            ws.put(ENDPOINTS, k.as_bytes(), v);
        }
        let store = Store::default();
        store.apply(covenant_types::TxId::new(2, 1), &ws).unwrap();
        let back = AppBundle::from_store(&store);
        assert_eq!(back.modules, b.modules);
        assert_eq!(
            back.metadata.endpoints["/a/{id}"],
            b.metadata.endpoints["/a/{id}"]
        );
        // Properties covenant does not act on read back as deployed; absent ones stay absent.
        let post = serde_json::to_value(&back.metadata.endpoints["/b"]["post"]).unwrap();
        assert_eq!(post["openapi_hidden"], json!(true));
        assert_eq!(post["redirection_strategy"], json!("to_primary"));
        assert!(
            post.get("mode").is_none() && post.get("openapi").is_none(),
            "{post}"
        );
    }

    #[test]
    fn bad_bundles_say_what_is_wrong() {
        let ep = |module: &str| json!({"js_module": module, "js_function": "f"});
        for (b, want) in [
            (json!({"modules": []}), "metadata"),
            (
                json!({"metadata": {"endpoints": {"/a": {"get": ep("x.js")}}}, "modules": []}),
                "not in the bundle",
            ),
            (
                json!({"metadata": {"endpoints": {"/a": {"fetch": ep("m")}}}, "modules": [{"name": "m", "module": ""}]}),
                "unknown method",
            ),
            (
                json!({"metadata": {"endpoints": {"a": {"get": ep("m")}}}, "modules": [{"name": "m", "module": ""}]}),
                "must start with /",
            ),
            (
                json!({"metadata": {"endpoints": {}}, "modules": [{"name": "m", "module": ""}, {"name": "/m", "module": ""}]}),
                "twice",
            ),
            (
                json!({"metadata": {"endpoints": {"/a": {"get": {"js_module": "m", "js_function": "f", "mode": "sometimes"}}}}, "modules": [{"name": "m", "module": ""}]}),
                "sometimes",
            ),
        ] {
            let err = bundle(b.clone()).unwrap_err();
            assert!(err.contains(want), "{b}: {err}");
        }
    }
}
