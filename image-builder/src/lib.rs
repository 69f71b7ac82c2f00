//! Builds Kiln's bootable artifacts (GPT disk image, PXE set) from Debian packages and the Rust userland.
