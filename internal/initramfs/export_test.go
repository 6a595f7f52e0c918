package initramfs

// LoadOrderWith exposes loadOrder's graph walk to tests.
var LoadOrderWith = loadOrder
