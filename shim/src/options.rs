//! Which wrun configuration a task uses: containerd's runtime options (`ConfigPath`, from
//! `ctr run --runtime-config-path` or the CRI runtime's `options`), else the system file.

use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::CodedInputStream;
use std::path::PathBuf;

/// The system-wide configuration, used when containerd names none and it exists.
pub const SYSTEM_CONFIG: &str = "/etc/wrun/config.toml";

/// `runtimeoptions.v1.Options { type_url = 1; config_path = 2; }`, containerd's generic options.
const RUNTIME_OPTIONS: &str = "runtimeoptions.v1.Options";

/// The configuration file for a task created with `options`.
pub fn config_path(options: Option<&Any>) -> Result<Option<PathBuf>, String> {
    let named = match options {
        Some(any) if !any.type_url.is_empty() => {
            if !any.type_url.ends_with(RUNTIME_OPTIONS) {
                return Err(format!(
                    "unsupported runtime options type `{}`",
                    any.type_url
                ));
            }
            config_path_field(&any.value)?
        }
        _ => None,
    };
    Ok(named
        .map(PathBuf::from)
        .or_else(|| Some(PathBuf::from(SYSTEM_CONFIG)).filter(|p| p.exists())))
}

/// Field 2 of the encoded options, skipping any others.
fn config_path_field(encoded: &[u8]) -> Result<Option<String>, String> {
    let mut input = CodedInputStream::from_bytes(encoded);
    let invalid =
        |e: containerd_shim::protos::protobuf::Error| format!("invalid runtime options: {e}");
    let mut found = None;
    while let Some(tag) = input.read_raw_tag_or_eof().map_err(invalid)? {
        if tag == (2 << 3 | 2) {
            found = Some(input.read_string().map_err(invalid)?).filter(|p| !p.is_empty());
        } else {
            let wire_type = containerd_shim::protos::protobuf::rt::WireType::new(tag & 7)
                .ok_or_else(|| format!("invalid runtime options: wire type {}", tag & 7))?;
            input.skip_field(wire_type).map_err(invalid)?;
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim::protos::protobuf::CodedOutputStream;

    fn options(type_url: &str, config_path: &str) -> Any {
        let mut value = Vec::new();
        {
            let mut out = CodedOutputStream::vec(&mut value);
            out.write_string(1, "io.containerd.wrun.v1").unwrap();
            out.write_string(2, config_path).unwrap();
            out.flush().unwrap();
        }
        Any {
            type_url: type_url.into(),
            value,
            ..Default::default()
        }
    }

    #[test]
    fn config_path_comes_from_runtime_options() {
        let any = options("runtimeoptions.v1.Options", "/etc/wrun/pod.toml");
        assert_eq!(
            config_path(Some(&any)).unwrap(),
            Some(PathBuf::from("/etc/wrun/pod.toml"))
        );
    }

    #[test]
    fn other_option_types_are_refused() {
        let any = options("containerd.runc.v1.Options", "/x");
        assert!(config_path(Some(&any))
            .unwrap_err()
            .contains("containerd.runc.v1.Options"));
    }

    #[test]
    fn garbage_options_are_an_error_not_a_panic() {
        let any = Any {
            type_url: "runtimeoptions.v1.Options".into(),
            value: vec![0x12, 0x7f, 0x41],
            ..Default::default()
        };
        assert!(config_path(Some(&any)).is_err());
    }
}
