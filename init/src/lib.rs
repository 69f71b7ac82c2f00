//! Kiln's PID 1: the boot phases, from the initramfs to supervised services, and shutdown.
