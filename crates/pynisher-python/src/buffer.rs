//! The bytes of a Python bytes-like object, through CPython's buffer
//! protocol.
//!
//! The extension is built for the stable ABI (abi3) from Python 3.9, so one
//! wheel serves 3.9 to 3.13. `Py_buffer` and `PyObject_GetBuffer` entered the
//! *limited* API only in 3.11, so PyO3 offers its buffer types to abi3 builds
//! only from 3.11; yet both have had this exact layout and these exported
//! symbols in every CPython since 3.3, and 3.9 and 3.10 will not change any
//! more. So they are declared here, as the headers of those versions define
//! them, and CI runs the wheel on 3.9 and 3.10 as well.

use std::ffi::{c_char, c_int, c_void};

use pyo3::exceptions::PyValueError;
use pyo3::ffi::{PyObject, Py_ssize_t};
use pyo3::prelude::*;

/// `Py_buffer`, as in CPython's `Include/pybuffer.h` (3.3 to 3.13).
#[repr(C)]
struct RawBuffer {
    buf: *mut c_void,
    obj: *mut PyObject,
    len: Py_ssize_t,
    itemsize: Py_ssize_t,
    readonly: c_int,
    ndim: c_int,
    format: *mut c_char,
    shape: *mut Py_ssize_t,
    strides: *mut Py_ssize_t,
    suboffsets: *mut Py_ssize_t,
    internal: *mut c_void,
}

extern "C" {
    fn PyObject_GetBuffer(obj: *mut PyObject, view: *mut RawBuffer, flags: c_int) -> c_int;
    fn PyBuffer_Release(view: *mut RawBuffer);
}

/// `PyBUF_SIMPLE`: plain contiguous bytes; an exporter that cannot give them
/// (a non-contiguous view) raises `BufferError`.
const PYBUF_SIMPLE: c_int = 0;

/// A held buffer of contiguous bytes; released on drop.
pub struct ContiguousBytes {
    // Boxed: CPython may keep pointers into the struct while it is exported.
    view: Box<RawBuffer>,
}

impl ContiguousBytes {
    /// Holds the buffer of `object` (`bytes`, `memoryview`, a
    /// `PickleBuffer.raw()`, ...).
    pub fn get(object: &Bound<'_, PyAny>) -> PyResult<ContiguousBytes> {
        let mut view = Box::new(RawBuffer {
            buf: std::ptr::null_mut(),
            obj: std::ptr::null_mut(),
            len: 0,
            itemsize: 0,
            readonly: 0,
            ndim: 0,
            format: std::ptr::null_mut(),
            shape: std::ptr::null_mut(),
            strides: std::ptr::null_mut(),
            suboffsets: std::ptr::null_mut(),
            internal: std::ptr::null_mut(),
        });
        // SAFETY: the GIL is held (we have a `Bound`), `object` is a live
        // object and `view` points to a writable `Py_buffer` of CPython's
        // layout; on failure CPython sets an exception and fills nothing we
        // release.
        let status = unsafe { PyObject_GetBuffer(object.as_ptr(), &mut *view, PYBUF_SIMPLE) };
        if status != 0 {
            return Err(PyErr::fetch(object.py()));
        }
        if view.len < 0 || (view.len > 0 && view.buf.is_null()) {
            drop(ContiguousBytes { view });
            return Err(PyValueError::new_err("a result buffer reported no bytes"));
        }
        Ok(ContiguousBytes { view })
    }

    /// The bytes, valid while `self` holds the buffer.
    pub fn as_slice(&self) -> &[u8] {
        if self.view.len == 0 {
            return &[];
        }
        // SAFETY: a PyBUF_SIMPLE buffer is `len` contiguous bytes at `buf`,
        // kept alive and unresized by the export until `self` releases it.
        unsafe { std::slice::from_raw_parts(self.view.buf.cast::<u8>(), self.view.len as usize) }
    }
}

impl Drop for ContiguousBytes {
    fn drop(&mut self) {
        Python::attach(|_| {
            // SAFETY: releases exactly the buffer `get` obtained, once, with
            // the GIL held.
            unsafe { PyBuffer_Release(&mut *self.view) }
        });
    }
}
