//! ImageService over the image store: PullImage, ListImages, ImageStatus,
//! RemoveImage, ImageFsInfo. Store errors become gRPC statuses whose
//! message is the store's named error.

use std::sync::Arc;
use std::time::SystemTime;

use tonic::{Code, Request, Response, Status};

use crate::image::{
    content::ContentError, registry::RegistryError, Auth, ImageRecord, ImageStore, PullError,
    StoreError,
};
use crate::proto::v1::image_service_server::ImageService;
use crate::proto::v1::{
    AuthConfig, FilesystemIdentifier, FilesystemUsage, Image, ImageFsInfoRequest,
    ImageFsInfoResponse, ImageSpec, ImageStatusRequest, ImageStatusResponse, Int64Value,
    ListImagesRequest, ListImagesResponse, PullImageRequest, PullImageResponse, RemoveImageRequest,
    RemoveImageResponse, UInt64Value,
};

pub struct Images {
    store: Arc<ImageStore>,
}

impl Images {
    pub fn new(store: Arc<ImageStore>) -> Self {
        Self { store }
    }
}

fn spec_image(spec: Option<&ImageSpec>) -> Result<&str, Status> {
    match spec.map(|s| s.image.as_str()) {
        Some(i) if !i.is_empty() => Ok(i),
        _ => Err(Status::invalid_argument(
            "image.image: an image reference or ID is required",
        )),
    }
}

#[tonic::async_trait]
impl ImageService for Images {
    async fn list_images(
        &self,
        req: Request<ListImagesRequest>,
    ) -> Result<Response<ListImagesResponse>, Status> {
        let filter = req
            .into_inner()
            .filter
            .and_then(|f| f.image)
            .map(|s| s.image)
            .filter(|i| !i.is_empty());
        let images = match filter {
            Some(name) => self.store.find(&name).into_iter().collect(),
            None => self.store.list(),
        };
        Ok(Response::new(ListImagesResponse {
            images: images.iter().map(to_cri).collect(),
        }))
    }

    async fn image_status(
        &self,
        req: Request<ImageStatusRequest>,
    ) -> Result<Response<ImageStatusResponse>, Status> {
        let req = req.into_inner();
        let name = spec_image(req.image.as_ref())?;
        // An unknown image is not an error: kubelet asks before pulling.
        let Some(rec) = self.store.find(name) else {
            return Ok(Response::new(ImageStatusResponse::default()));
        };
        let mut info = std::collections::HashMap::new();
        if req.verbose {
            let layers: Vec<String> = self
                .store
                .layer_dirs(&rec)
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            let v = serde_json::json!({ "record": rec, "layerDirs": layers });
            info.insert("info".to_string(), v.to_string());
        }
        Ok(Response::new(ImageStatusResponse {
            image: Some(to_cri(&rec)),
            info,
        }))
    }

    async fn pull_image(
        &self,
        req: Request<PullImageRequest>,
    ) -> Result<Response<PullImageResponse>, Status> {
        let req = req.into_inner();
        let name = spec_image(req.image.as_ref())?;
        let auth = auth(req.auth)?;
        let rec = self.store.pull(name, auth).await.map_err(pull_status)?;
        Ok(Response::new(PullImageResponse {
            image_ref: rec.id.to_string(),
        }))
    }

    async fn remove_image(
        &self,
        req: Request<RemoveImageRequest>,
    ) -> Result<Response<RemoveImageResponse>, Status> {
        let req = req.into_inner();
        let name = spec_image(req.image.as_ref())?;
        self.store.remove(name).await.map_err(store_status)?;
        Ok(Response::new(RemoveImageResponse {}))
    }

    async fn image_fs_info(
        &self,
        _: Request<ImageFsInfoRequest>,
    ) -> Result<Response<ImageFsInfoResponse>, Status> {
        let usage = self.store.usage().await.map_err(store_status)?;
        let timestamp = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        Ok(Response::new(ImageFsInfoResponse {
            image_filesystems: vec![FilesystemUsage {
                timestamp,
                fs_id: Some(FilesystemIdentifier {
                    mountpoint: self.store.root().display().to_string(),
                }),
                used_bytes: Some(UInt64Value { value: usage.bytes }),
                inodes_used: Some(UInt64Value {
                    value: usage.inodes,
                }),
            }],
            container_filesystems: Vec::new(),
        }))
    }
}

/// The CRI view of a record: a numeric `User` is the uid, a name the
/// username (group part ignored, as in containerd).
fn to_cri(r: &ImageRecord) -> Image {
    let user = r.user.as_deref().unwrap_or_default();
    let user = user.split(':').next().unwrap_or_default();
    let (uid, username) = match user.parse::<i64>() {
        Ok(n) => (Some(Int64Value { value: n }), String::new()),
        Err(_) => (None, user.to_string()),
    };
    Image {
        id: r.id.to_string(),
        repo_tags: r.repo_tags.clone(),
        repo_digests: r.repo_digests.clone(),
        size: r.size(),
        uid,
        username,
        spec: Some(ImageSpec {
            image: r.id.to_string(),
            ..Default::default()
        }),
        pinned: r.pinned,
    }
}

/// Credentials from the request: user/password, `auth` (base64
/// "user:password") or a registry token.
fn auth(a: Option<AuthConfig>) -> Result<Auth, Status> {
    let Some(a) = a else {
        return Ok(Auth::Anonymous);
    };
    if !a.registry_token.is_empty() {
        return Ok(Auth::Bearer(a.registry_token));
    }
    if !a.username.is_empty() {
        return Ok(Auth::Basic {
            username: a.username,
            password: a.password,
        });
    }
    if !a.auth.is_empty() {
        use base64::Engine as _;
        let bad = || Status::invalid_argument("auth.auth: expected base64 of \"user:password\"");
        let raw = base64::engine::general_purpose::STANDARD
            .decode(a.auth.trim())
            .map_err(|_| bad())?;
        let text = String::from_utf8(raw).map_err(|_| bad())?;
        let (username, password) = text.split_once(':').ok_or_else(bad)?;
        return Ok(Auth::Basic {
            username: username.into(),
            password: password.into(),
        });
    }
    if !a.identity_token.is_empty() {
        return Err(Status::unimplemented(
            "auth.identity_token: OAuth refresh tokens are not supported yet; send username/password or registry_token",
        ));
    }
    Ok(Auth::Anonymous)
}

fn pull_status(e: PullError) -> Status {
    let code = match &e {
        PullError::Reference(_) => Code::InvalidArgument,
        PullError::Registry(RegistryError::Unauthorized { .. }) => Code::Unauthenticated,
        PullError::Registry(RegistryError::NotFound { .. }) => Code::NotFound,
        PullError::Registry(RegistryError::Other { .. }) | PullError::Transfer { .. } => {
            Code::Unavailable
        }
        PullError::ManifestDigestMismatch { .. }
        | PullError::Content(
            ContentError::DigestMismatch { .. } | ContentError::SizeMismatch { .. },
        ) => Code::DataLoss,
        PullError::Manifest { .. } | PullError::Snapshot(_) => Code::FailedPrecondition,
        PullError::Content(_) | PullError::Record(_) | PullError::Task(_) => Code::Internal,
    };
    tracing::warn!(error = %e, "pull failed");
    Status::new(code, e.to_string())
}

fn store_status(e: StoreError) -> Status {
    tracing::warn!(error = %e, "image store");
    Status::internal(e.to_string())
}
