package emu

import "unsafe"

// uintptrOf returns the address of b's first byte, to align DMA buffers
// to pages as hardware requires.
func uintptrOf(b []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(b))) }
