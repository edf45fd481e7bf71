//! `push`: an image of the store to a registry as it is stored (its manifest's bytes, so its
//! digest is the same there): the blobs the registry lacks, then the manifest under the tag.

use super::pull::{blobs_of, connect, media_type_of};
use super::{from_oci, host_of, RegistryError};
use crate::config::RegistrySettings;
use crate::image::store::ImageStore;
use crate::progress::{Unit, Watcher};
use oci_client::RegistryOperation;

/// Pushes the stored image `text` (named as it will be in the registry); returns its digest.
pub fn push(
    store: &ImageStore,
    settings: &RegistrySettings,
    text: &str,
    watcher: &dyn Watcher,
) -> Result<String, RegistryError> {
    super::install_crypto();
    let entry = store
        .resolve(text)
        .map_err(|_| RegistryError::NoSuchImage(text.to_string()))?;
    let remote = super::parse(text)?;
    let host = host_of(&remote);
    let what = remote.whole();
    let manifest = store.read_blob(&entry.digest())?;
    let value: serde_json::Value =
        serde_json::from_slice(&manifest).map_err(|e| RegistryError::Unsupported {
            what: what.clone(),
            reason: format!("its stored manifest is not JSON: {e}"),
        })?;
    let blobs = blobs_of(&what, &value)?;
    let media_type = media_type_of(&manifest);
    let content_type =
        http::HeaderValue::from_str(&media_type).map_err(|_| RegistryError::Unsupported {
            what: what.clone(),
            reason: format!("media type `{media_type}`"),
        })?;
    super::runtime()?.block_on(async {
        let (client, _) = connect(&host, settings, &remote, RegistryOperation::Push).await?;
        let failed = |e| from_oci(&what, &host, e);
        for blob in &blobs {
            if client
                .blob_exists(&remote, &blob.digest)
                .await
                .map_err(failed)?
            {
                continue;
            }
            let path = store.blob_path(&blob.digest);
            let data = std::fs::read(&path).map_err(super::io("read", &path))?;
            let hex = blob.digest.trim_start_matches("sha256:");
            let counter = watcher.start(&hex[..hex.len().min(12)], data.len() as u64, Unit::Bytes);
            let size = data.len() as u64;
            client
                .push_blob(&remote, data, &blob.digest)
                .await
                .map_err(failed)?;
            counter.add(size);
        }
        client
            .push_manifest_raw(&remote, manifest.clone(), content_type)
            .await
            .map_err(failed)?;
        Ok(entry.digest())
    })
}
