//! Image references: `NAME[:TAG]` (Docker's rules, tag `latest` by default) and digests.

use std::fmt;

/// A validated `NAME:TAG`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Reference {
    pub name: String,
    pub tag: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReferenceError {
    #[error("invalid image reference `{0}`: expected NAME[:TAG] with a lowercase name of letters, digits and . _ - /")]
    Invalid(String),
}

impl Reference {
    /// Parses `NAME[:TAG]`. A registry host with a port (`host:5000/name`) is allowed.
    pub fn parse(text: &str) -> Result<Reference, ReferenceError> {
        let err = || ReferenceError::Invalid(text.to_string());
        let (name, tag) = match text.rfind(':') {
            Some(colon) if !text[colon + 1..].contains('/') => (&text[..colon], &text[colon + 1..]),
            _ => (text, "latest"),
        };
        let component_ok = |part: &str| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                && part
                    .bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_alphanumeric())
        };
        let parts: Vec<&str> = name.split('/').collect();
        // Only a registry host (the first of several components) may carry a `:port`.
        let host_ok = |part: &str| match part.split_once(':') {
            Some((host, port)) => {
                parts.len() > 1
                    && component_ok(host)
                    && !port.is_empty()
                    && port.bytes().all(|b| b.is_ascii_digit())
            }
            None => component_ok(part),
        };
        let name_ok = !name.is_empty()
            && name.len() <= 255
            && host_ok(parts[0])
            && parts[1..].iter().all(|part| component_ok(part));
        let tag_ok = !tag.is_empty()
            && tag.len() <= 128
            && tag
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            && tag
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !name_ok || !tag_ok {
            return Err(err());
        }
        Ok(Reference {
            name: name.to_string(),
            tag: tag.to_string(),
        })
    }

    /// The name as containerd writes it: `docker.io/library/NAME:TAG` for a bare name.
    pub fn qualified(&self) -> String {
        let first = self.name.split('/').next().unwrap_or_default();
        let has_registry = self.name.contains('/')
            && (first.contains('.') || first.contains(':') || first == "localhost");
        let path = if has_registry {
            self.name.clone()
        } else if self.name.contains('/') {
            format!("docker.io/{}", self.name)
        } else {
            format!("docker.io/library/{}", self.name)
        };
        format!("{path}:{}", self.tag)
    }

    /// Reads a name as containerd or Docker writes it, dropping `docker.io/library/`.
    pub fn from_qualified(text: &str) -> Result<Reference, ReferenceError> {
        let short = text
            .strip_prefix("docker.io/library/")
            .or_else(|| text.strip_prefix("docker.io/"))
            .unwrap_or(text);
        Reference::parse(short)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, self.tag)
    }
}

/// A `sha256:<64 hex>` digest, or its hex part alone, normalised to `sha256:<hex>`.
pub fn parse_digest(text: &str) -> Option<String> {
    let hex = text.strip_prefix("sha256:").unwrap_or(text);
    (hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    .then(|| format!("sha256:{hex}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_default_to_latest() {
        let r = Reference::parse("frontend-app").unwrap();
        assert_eq!(
            (r.name.as_str(), r.tag.as_str()),
            ("frontend-app", "latest")
        );
        let r = Reference::parse("team/app:v1.2").unwrap();
        assert_eq!(r.to_string(), "team/app:v1.2");
        let r = Reference::parse("localhost:5000/app").unwrap();
        assert_eq!(
            (r.name.as_str(), r.tag.as_str()),
            ("localhost:5000/app", "latest")
        );
    }

    #[test]
    fn bad_references_are_refused() {
        for bad in [
            "", "App", "a b", ":tag", "app:", "app:-x", "/app", "app//x", "app:t/x",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn containerd_names_round_trip() {
        let r = Reference::parse("busybox").unwrap();
        assert_eq!(r.qualified(), "docker.io/library/busybox:latest");
        assert_eq!(Reference::from_qualified(&r.qualified()).unwrap(), r);
        let r = Reference::parse("ghcr.io/x/y:1").unwrap();
        assert_eq!(r.qualified(), "ghcr.io/x/y:1");
        assert_eq!(Reference::from_qualified("ghcr.io/x/y:1").unwrap(), r);
    }

    #[test]
    fn digests_are_normalised() {
        let hex = "a".repeat(64);
        assert_eq!(parse_digest(&hex), Some(format!("sha256:{hex}")));
        assert_eq!(
            parse_digest(&format!("sha256:{hex}")),
            Some(format!("sha256:{hex}"))
        );
        assert_eq!(parse_digest("sha256:abc"), None);
    }
}
