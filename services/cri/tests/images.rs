//! kiln-cri's ImageService driven over its unix socket by a tonic CRI
//! client, against Debian's docker-registry in a network namespace each
//! test creates, serving images the tests build (Debian's busybox-static
//! binary among them) and push with skopeo. Run as root.

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

use common::oci::{self, node_arch};
use common::proxy::{Cut, Proxy};
use common::registry::Registry;
use common::{in_netns, push_busybox, refused, Cri};
use kiln_cri::image::digest::{chain_ids, Digest};
use kiln_cri::proto::v1::*;
use tonic::Code;

fn spec(image: &str) -> Option<ImageSpec> {
    Some(ImageSpec {
        image: image.into(),
        ..Default::default()
    })
}

fn pull_req(image: &str, auth: Option<AuthConfig>) -> PullImageRequest {
    PullImageRequest {
        image: spec(image),
        auth,
        sandbox_config: None,
    }
}

async fn pull(cri: &mut Cri, image: &str) -> Result<String, tonic::Status> {
    cri.images
        .pull_image(pull_req(image, None))
        .await
        .map(|r| r.into_inner().image_ref)
}

async fn list(cri: &mut Cri, filter: Option<&str>) -> Vec<Image> {
    let filter = filter.map(|f| ImageFilter { image: spec(f) });
    cri.images
        .list_images(ListImagesRequest { filter })
        .await
        .unwrap()
        .into_inner()
        .images
}

async fn status(cri: &mut Cri, image: &str) -> Option<Image> {
    cri.images
        .image_status(ImageStatusRequest {
            image: spec(image),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .image
}

async fn remove(cri: &mut Cri, image: &str) {
    cri.images
        .remove_image(RemoveImageRequest { image: spec(image) })
        .await
        .unwrap();
}

fn config_digest(layout: &oci::Layout, manifest: &oci::Desc) -> Digest {
    let m: serde_json::Value = serde_json::from_slice(
        &fs::read(layout.dir.join("blobs/sha256").join(manifest.digest.hex())).unwrap(),
    )
    .unwrap();
    m["config"]["digest"].as_str().unwrap().parse().unwrap()
}

#[test]
fn pull_list_status_remove_and_collect() {
    in_netns(|| async {
        let reg = Registry::start(None).await;
        let (_work, layout, built) = push_busybox(&reg);
        reg.push(&layout.dir, "busybox", "kiln/busybox:2");
        reg.push(&layout.dir, "multi", "kiln/multi:1");
        let mut cri = Cri::start(std::slice::from_ref(&reg.addr)).await;
        let r = &reg.addr;

        // RuntimeService: Version, and UNIMPLEMENTED for what is not written.
        let v = cri
            .runtime
            .version(VersionRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (v.runtime_name.as_str(), v.runtime_api_version.as_str()),
            ("kiln-cri", "v1")
        );
        refused(
            cri.runtime.attach(AttachRequest::default()).await,
            Code::Unimplemented,
        );

        // Pull by tag: the image ID is the config digest.
        let id = config_digest(&layout, &built.busybox);
        assert_eq!(
            pull(&mut cri, &format!("{r}/kiln/busybox:1"))
                .await
                .unwrap(),
            id.to_string()
        );

        // The snapshots: one per layer, keyed by chain ID, overlayfs form.
        let diff_ids: Vec<Digest> = built
            .busybox_layers
            .iter()
            .map(|l| l.diff_id.clone())
            .collect();
        let chains = chain_ids(&diff_ids);
        let snap = |i: usize| {
            cri.root()
                .join("snapshots/sha256")
                .join(chains[i].hex())
                .join("fs")
        };
        assert_eq!(
            fs::read(snap(0).join("bin/busybox")).unwrap(),
            oci::busybox()
        );
        let (bb, sh) = (
            fs::metadata(snap(0).join("bin/busybox")).unwrap(),
            fs::metadata(snap(0).join("bin/sh")).unwrap(),
        );
        assert_eq!(
            (bb.ino(), bb.mode() & 0o777),
            (sh.ino(), 0o755),
            "hard link within a layer"
        );
        assert_eq!(
            fs::read_link(snap(0).join("bin/ls")).unwrap().to_str(),
            Some("busybox")
        );
        let wh = fs::symlink_metadata(snap(1).join("etc/motd")).unwrap();
        assert!(
            wh.file_type().is_char_device() && wh.rdev() == 0,
            "whiteout"
        );
        let mut x = [0u8; 1];
        assert_eq!(
            rustix::fs::lgetxattr(snap(1).join("opt/old"), "trusted.overlay.opaque", &mut x)
                .unwrap(),
            1
        );
        assert_eq!(
            fs::read(snap(1).join("bin/cat")).unwrap(),
            oci::busybox(),
            "hard link to a lower layer"
        );
        assert_eq!(fs::read(snap(2).join("etc/hostname")).unwrap(), b"kiln\n");

        // A second tag and a digest reference name the same image.
        assert_eq!(
            pull(&mut cri, &format!("{r}/kiln/busybox:2"))
                .await
                .unwrap(),
            id.to_string()
        );
        assert_eq!(
            reg.tag_digest("kiln/busybox", "2"),
            built.busybox.digest.to_string()
        );
        let by_digest = format!("{r}/kiln/busybox@{}", built.busybox.digest);
        assert_eq!(pull(&mut cri, &by_digest).await.unwrap(), id.to_string());
        let img = status(&mut cri, &format!("{r}/kiln/busybox:1"))
            .await
            .unwrap();
        assert_eq!(img.id, id.to_string());
        assert_eq!(
            img.repo_tags,
            vec![format!("{r}/kiln/busybox:1"), format!("{r}/kiln/busybox:2")]
        );
        assert_eq!(img.repo_digests, vec![by_digest.clone()]);
        assert_eq!(img.uid, Some(Int64Value { value: 1000 }));
        let layer_bytes: u64 = built.busybox_layers.iter().map(|l| l.desc.size).sum();
        assert!(
            img.size > layer_bytes,
            "size {} counts the layers ({layer_bytes}) and config",
            img.size
        );
        assert_eq!(
            status(&mut cri, &by_digest).await.unwrap().id,
            id.to_string()
        );
        assert_eq!(
            status(&mut cri, &id.to_string()).await.unwrap().id,
            id.to_string()
        );
        assert_eq!(status(&mut cri, id.hex()).await.unwrap().id, id.to_string());
        assert!(status(&mut cri, &format!("{r}/kiln/busybox:9"))
            .await
            .is_none());
        let verbose = cri
            .images
            .image_status(ImageStatusRequest {
                image: spec(&by_digest),
                verbose: true,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(verbose.info["info"].contains("layerDirs"));

        // A manifest list: the node's platform is picked.
        let multi_id = pull(&mut cri, &format!("{r}/kiln/multi:1")).await.unwrap();
        let multi = status(&mut cri, &multi_id).await.unwrap();
        assert_eq!(
            multi.repo_digests,
            vec![format!("{r}/kiln/multi@{}", built.multi.digest)]
        );
        let info = cri
            .images
            .image_status(ImageStatusRequest {
                image: spec(&multi_id),
                verbose: true,
            })
            .await
            .unwrap()
            .into_inner()
            .info;
        let info: serde_json::Value = serde_json::from_str(&info["info"]).unwrap();
        let top = info["layerDirs"][0].as_str().unwrap();
        assert_eq!(
            fs::read_to_string(format!("{top}/arch")).unwrap(),
            node_arch()
        );

        // Lists, with and without a filter.
        assert_eq!(list(&mut cri, None).await.len(), 2);
        assert_eq!(
            list(&mut cri, Some(&format!("{r}/kiln/busybox:2")))
                .await
                .len(),
            1
        );
        assert_eq!(
            list(&mut cri, Some(&format!("{r}/kiln/nothing:1")))
                .await
                .len(),
            0
        );

        // ImageFsInfo counts the store.
        let fsinfo = cri
            .images
            .image_fs_info(ImageFsInfoRequest {})
            .await
            .unwrap()
            .into_inner();
        let usage = &fsinfo.image_filesystems[0];
        assert!(usage.used_bytes.as_ref().unwrap().value > 2 * oci::busybox().len() as u64);
        assert!(usage.inodes_used.as_ref().unwrap().value > 20);

        // Remove by tag keeps the image while another tag names it.
        let blobs_before = cri.files("blobs/sha256");
        remove(&mut cri, &format!("{r}/kiln/busybox:1")).await;
        let img = status(&mut cri, &id.to_string()).await.unwrap();
        assert_eq!(img.repo_tags, vec![format!("{r}/kiln/busybox:2")]);
        assert_eq!(cri.files("blobs/sha256"), blobs_before);

        // Remove by ID: its blobs and snapshots go, the other image's stay.
        remove(&mut cri, &id.to_string()).await;
        assert!(status(&mut cri, &id.to_string()).await.is_none());
        let left = cri.files("blobs/sha256");
        assert_eq!(
            left.len(),
            4,
            "multi's index, manifest, config and layer: {left:?}"
        );
        assert!(!left.iter().any(|b| built
            .busybox_layers
            .iter()
            .any(|l| l.desc.digest.hex() == b)));
        assert_eq!(cri.files("snapshots/sha256").len(), 1);
        // Removing again is not an error.
        remove(&mut cri, &id.to_string()).await;

        remove(&mut cri, &format!("{r}/kiln/multi:1")).await;
        for dir in [
            "blobs/sha256",
            "snapshots/sha256",
            "snapshots/tmp",
            "ingest",
            "images",
        ] {
            assert!(
                cri.files(dir).is_empty(),
                "{dir} is empty after the last remove: {:?}",
                cri.files(dir)
            );
        }
        assert!(list(&mut cri, None).await.is_empty());
        cri.stop().await;
    });
}

#[test]
fn bad_requests_get_named_errors() {
    in_netns(|| async {
        let reg = Registry::start(None).await;
        let mut cri = Cri::start(std::slice::from_ref(&reg.addr)).await;
        let err = refused(
            cri.images.pull_image(pull_req("", None)).await,
            Code::InvalidArgument,
        );
        assert!(err.message().contains("image.image"), "{}", err.message());
        refused(
            pull(&mut cri, "repo/Not:Valid:Ref").await,
            Code::InvalidArgument,
        );
        let err = pull(&mut cri, &format!("{}/kiln/absent:1", reg.addr))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{}", err.message());
        cri.stop().await;
    });
}

#[test]
fn a_corrupt_blob_fails_by_name_and_stores_nothing() {
    in_netns(|| async {
        let reg = Registry::start(None).await;
        let (_work, _, built) = push_busybox(&reg);
        // Flip bytes of the bottom layer in the registry's storage: the
        // registry serves it under its old digest.
        let bad = &built.busybox_layers[0].desc.digest;
        let data = reg.blob_data(&bad.to_string());
        let mut bytes = fs::read(&data).unwrap();
        let mid = bytes.len() / 2;
        for b in &mut bytes[mid..mid + 16] {
            *b ^= 0xff;
        }
        fs::write(&data, bytes).unwrap();

        let mut cri = Cri::start(std::slice::from_ref(&reg.addr)).await;
        let err = pull(&mut cri, &format!("{}/kiln/busybox:1", reg.addr))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::DataLoss, "{}", err.message());
        assert!(
            err.message().contains("digest mismatch") && err.message().contains(&bad.to_string()),
            "{}",
            err.message()
        );
        assert!(!cri.files("blobs/sha256").contains(&bad.hex().to_string()));
        assert!(
            !cri.files("ingest").iter().any(|f| f.starts_with(bad.hex())),
            "no partial left"
        );
        assert!(cri.files("snapshots/sha256").is_empty());
        assert!(cri.files("images").is_empty());
        assert!(list(&mut cri, None).await.is_empty());
        cri.stop().await;
    });
}

#[test]
fn htpasswd_registry_needs_credentials() {
    in_netns(|| async {
        let reg = Registry::start(Some(("kiln", "s3cret"))).await;
        let _work = push_busybox(&reg);
        let mut cri = Cri::start(std::slice::from_ref(&reg.addr)).await;
        let image = format!("{}/kiln/busybox:1", reg.addr);

        let err = pull(&mut cri, &image).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{}", err.message());
        let wrong = AuthConfig {
            username: "kiln".into(),
            password: "wrong".into(),
            ..Default::default()
        };
        let err = cri
            .images
            .pull_image(pull_req(&image, Some(wrong)))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{}", err.message());
        assert!(cri.files("images").is_empty());

        let right = AuthConfig {
            username: "kiln".into(),
            password: "s3cret".into(),
            ..Default::default()
        };
        let id = cri
            .images
            .pull_image(pull_req(&image, Some(right)))
            .await
            .unwrap()
            .into_inner()
            .image_ref;
        remove(&mut cri, &id).await;
        // The same credentials as a base64 "auth" field.
        let encoded = AuthConfig {
            auth: "a2lsbjpzM2NyZXQ=".into(),
            ..Default::default()
        };
        let again = cri
            .images
            .pull_image(pull_req(&image, Some(encoded)))
            .await
            .unwrap()
            .into_inner()
            .image_ref;
        assert_eq!(id, again);
        cri.stop().await;
    });
}

#[test]
fn concurrent_pulls_download_each_blob_once() {
    in_netns(|| async {
        let reg = Registry::start(None).await;
        let (_work, layout, built) = push_busybox(&reg);
        let proxy = Proxy::start(&reg.addr, None).await;
        let cri = Cri::start(std::slice::from_ref(&proxy.addr)).await;
        let image = format!("{}/kiln/busybox:1", proxy.addr);
        let pulls: Vec<_> = (0..4)
            .map(|_| {
                let mut client = cri.images.clone();
                let image = image.clone();
                tokio::spawn(async move {
                    client
                        .pull_image(pull_req(&image, None))
                        .await
                        .map(|r| r.into_inner().image_ref)
                })
            })
            .collect();
        let mut ids = Vec::new();
        for p in pulls {
            ids.push(p.await.unwrap().unwrap());
        }
        ids.dedup();
        assert_eq!(ids.len(), 1);
        let config = config_digest(&layout, &built.busybox);
        for d in built
            .busybox_layers
            .iter()
            .map(|l| &l.desc.digest)
            .chain([&config])
        {
            assert_eq!(
                proxy.blob_gets(&d.to_string()).len(),
                1,
                "one GET for {d}: {:?}",
                proxy.seen()
            );
        }
        cri.stop().await;
    });
}

#[test]
fn an_interrupted_layer_download_resumes_with_a_range_request() {
    in_netns(|| async {
        let reg = Registry::start(None).await;
        let (_work, _, built) = push_busybox(&reg);
        let big = built.busybox_layers[0].desc.clone();
        assert!(
            big.size > 256 * 1024,
            "the busybox layer is large enough to cut"
        );
        let proxy = Proxy::start(
            &reg.addr,
            Some(Cut {
                suffix: format!("/blobs/{}", big.digest),
                after: 128 * 1024,
                times: 1,
            }),
        )
        .await;
        let mut cri = Cri::start(std::slice::from_ref(&proxy.addr)).await;
        pull(&mut cri, &format!("{}/kiln/busybox:1", proxy.addr))
            .await
            .unwrap();
        let gets = proxy.blob_gets(&big.digest.to_string());
        assert_eq!(gets.len(), 2, "{gets:?}");
        let resumed_at: u64 = gets[1]
            .range
            .as_deref()
            .and_then(|r| r.strip_prefix("bytes="))
            .and_then(|r| r.strip_suffix('-'))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("second request has a Range: {gets:?}"));
        assert!(
            resumed_at > 0 && resumed_at <= 128 * 1024,
            "resumed at {resumed_at}"
        );
        assert_stored(&cri, &big.digest);
        cri.stop().await;
    });
}

#[test]
fn a_download_broken_for_good_resumes_after_a_restart() {
    in_netns(|| async {
        let reg = Registry::start(None).await;
        let (_work, _, built) = push_busybox(&reg);
        let big = built.busybox_layers[0].desc.clone();
        assert!(
            big.size > 512 * 1024,
            "the busybox layer is large enough to cut three times"
        );
        // Every attempt of the first daemon is cut: the pull fails.
        let cut = Proxy::start(
            &reg.addr,
            Some(Cut {
                suffix: format!("/blobs/{}", big.digest),
                after: 100 * 1024,
                times: 3,
            }),
        )
        .await;
        let plain = Proxy::start(&reg.addr, None).await;
        let insecure = [cut.addr.clone(), plain.addr.clone()];
        let mut cri = Cri::start(&insecure).await;
        let err = pull(&mut cri, &format!("{}/kiln/busybox:1", cut.addr))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
        assert!(
            err.message().contains("transfer failed after 3 attempts"),
            "{}",
            err.message()
        );
        let partial = cri
            .root()
            .join("ingest")
            .join(format!("{}.partial", big.digest.hex()));
        let kept = fs::metadata(&partial).unwrap().len();
        assert!(kept > 100 * 1024, "three cut attempts kept {kept} bytes");

        // A new daemon on the same root resumes from the partial file.
        let mut cri = cri.restart(&insecure).await;
        pull(&mut cri, &format!("{}/kiln/busybox:1", plain.addr))
            .await
            .unwrap();
        let gets = plain.blob_gets(&big.digest.to_string());
        assert_eq!(gets.len(), 1, "{gets:?}");
        assert_eq!(
            gets[0].range.as_deref(),
            Some(format!("bytes={kept}-").as_str())
        );
        assert!(!partial.exists());
        assert_stored(&cri, &big.digest);
        cri.stop().await;
    });
}

/// Builds the test images and pushes `busybox` as `kiln/busybox:1`; the
/// The blob is in kiln-cri's store, whole and with its digest.
fn assert_stored(cri: &Cri, digest: &Digest) {
    let stored = fs::read(cri.root().join("blobs/sha256").join(digest.hex())).unwrap();
    assert_eq!(&Digest::of(&stored), digest);
}
