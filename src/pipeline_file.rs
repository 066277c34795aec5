//! Pipeline files (`retryd submit --pipeline FILE`): TOML or YAML, the same structure as the
//! API's `{"type": "pipeline", "steps": [...]}` action. Every error names the step and field.

use anyhow::{Result, anyhow};
use retryd_core::pipeline::PipelineAction;
use serde_json::Value;
use std::path::Path;

/// Reads, parses and validates a pipeline file; its extension says the format.
pub fn load(path: &Path) -> Result<PipelineAction> {
    let shown = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| anyhow!("--pipeline {shown}: {e}"))?;
    let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let value = parse(&text, extension).map_err(|e| anyhow!("--pipeline {shown}: {e}"))?;
    let pipeline = from_value(value).map_err(|e| anyhow!("--pipeline {shown}: {e}"))?;
    pipeline
        .validate()
        .map_err(|e| anyhow!("--pipeline {shown}: {e}"))?;
    Ok(pipeline)
}

/// The file as a JSON value.
fn parse(text: &str, extension: &str) -> Result<Value, String> {
    match extension {
        "toml" => toml::from_str::<toml::Value>(text)
            .map_err(|e| format!("not valid TOML: {}", e.message()))
            .and_then(|v| serde_json::to_value(v).map_err(|e| e.to_string())),
        "yaml" | "yml" => {
            serde_yaml::from_str::<Value>(text).map_err(|e| format!("not valid YAML: {e}"))
        }
        other => Err(format!(
            "the file must end in .toml, .yaml or .yml (got {:?})",
            if other.is_empty() {
                "no extension"
            } else {
                other
            }
        )),
    }
}

/// The pipeline a value describes; a structural error names the step by its name.
fn from_value(value: Value) -> Result<PipelineAction, String> {
    serde_path_to_error::deserialize(&value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        // `steps[2].http` reads better as `steps.submit.http`.
        let named = path
            .strip_prefix("steps[")
            .and_then(|rest| rest.split_once(']'))
            .and_then(|(index, rest)| {
                let index: usize = index.parse().ok()?;
                let name = value.pointer(&format!("/steps/{index}/name"))?.as_str()?;
                Some(format!("steps.{name}{rest}"))
            });
        match named.as_deref().unwrap_or(&path) {
            "." => inner.to_string(),
            at => format!("{at}: {inner}"),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_and_yaml_give_the_same_pipeline() {
        let toml = r#"
[[steps]]
name = "submit"
policy = "connection"
http = { method = "POST", url = "http://node/rpc", body = '{"id":1}' }
export = { tx_hash = "/result" }

[[steps]]
name = "verify"
continue_on_failure = true
timeout = "30s"
command = { program = "verify", args = ["{{ steps.submit.outputs.tx_hash }}"] }
"#;
        let yaml = r#"
steps:
  - name: submit
    policy: connection
    http: { method: POST, url: "http://node/rpc", body: '{"id":1}' }
    export: { tx_hash: /result }
  - name: verify
    continue_on_failure: true
    timeout: 30s
    command:
      program: verify
      args: ["{{ steps.submit.outputs.tx_hash }}"]
"#;
        let a = from_value(parse(toml, "toml").unwrap()).unwrap();
        let b = from_value(parse(yaml, "yaml").unwrap()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.validate(), Ok(()));
    }

    #[test]
    fn errors_name_the_step_and_the_field() {
        let unknown =
            "[[steps]]\nname = \"submit\"\nhttp = { url = \"http://x\", metod = \"POST\" }\n";
        let error = from_value(parse(unknown, "toml").unwrap()).unwrap_err();
        assert!(
            error.starts_with("steps.submit.http.metod: unknown field `metod`"),
            "{error}"
        );
        let extra = "steps: []\nname: x\n";
        let error = from_value(parse(extra, "yaml").unwrap()).unwrap_err();
        assert!(error.contains("unknown field `name`"), "{error}");
        assert!(
            parse("x", "json")
                .unwrap_err()
                .contains(".toml, .yaml or .yml")
        );
    }
}
