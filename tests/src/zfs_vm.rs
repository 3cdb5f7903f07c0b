//! Real OpenZFS in a QEMU VM for tests.
