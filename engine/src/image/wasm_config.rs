//! The media types of Wasm images, and the config of the CNCF Wasm OCI artifact
//! (`application/vnd.wasm.config.v0+json`), which oci-spec does not model.

use serde::{Deserialize, Serialize};

/// Config of the CNCF Wasm OCI artifact.
pub const WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";
/// A Wasm module or component as a layer (CNCF artifact).
pub const WASM_LAYER: &str = "application/wasm";
/// A component as a layer (the Bytecode Alliance's media type, read by containerd shims).
pub const COMPONENT_LAYER: &str = "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm";
/// Docker's manifest, config and layer types, which `docker save` and registries still use.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// Whether a layer media type holds a bare Wasm binary.
pub fn is_wasm_layer(media_type: &str) -> bool {
    media_type == WASM_LAYER || media_type == COMPONENT_LAYER
}

/// `application/vnd.wasm.config.v0+json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct WasmArtifactConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    pub architecture: String,
    pub os: String,
    #[serde(default)]
    pub layer_digests: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_wasm_layer_types_are_recognised() {
        assert!(is_wasm_layer("application/wasm"));
        assert!(is_wasm_layer(
            "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm"
        ));
        assert!(!is_wasm_layer("application/vnd.oci.image.layer.v1.tar"));
    }

    #[test]
    fn the_cncf_config_reads_and_writes_camel_case() {
        let text = r#"{"created":"2024-01-01T00:00:00Z","architecture":"wasm","os":"wasip2","layerDigests":["sha256:ab"],"component":{"target":"wasi:cli/command@0.2.0"}}"#;
        let config: WasmArtifactConfig = serde_json::from_str(text).unwrap();
        assert_eq!(config.os, "wasip2");
        assert_eq!(config.layer_digests, ["sha256:ab"]);
        let again = serde_json::to_string(&config).unwrap();
        assert!(again.contains("\"layerDigests\""));
    }
}
