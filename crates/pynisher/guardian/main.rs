//! The guardian program: what a call's guardian runs once it has left the
//! function's memory (see `pynisher::guardian`).
//!
//! A `no_std` program without a C library, linked statically, so that it
//! runs from a memfd on any Linux with nothing to install. `build.rs`
//! compiles it with the same `rustc` and the crate embeds the binary.
//!
//! Usage: `pynisher-guard <parent> <terminate 0|1> <function pid> <page fd|-1>`

#![no_std]
#![no_main]

use core::arch::{asm, global_asm};

#[path = "../src/sys/procfs.rs"]
#[allow(dead_code)]
mod procfs;
#[path = "../src/sys/raw.rs"]
#[allow(dead_code)]
mod raw;
#[path = "../src/guardian/watch.rs"]
#[allow(dead_code)]
mod watch;

// The kernel starts the program with argc at the stack pointer, then the
// argv pointers. Hand that address to `start` on an aligned stack.
global_asm!(
    ".globl _start",
    "_start:",
    "xor ebp, ebp",
    "mov rdi, rsp",
    "and rsp, -16",
    "call {start}",
    "ud2",
    start = sym start,
);

/// # Safety
/// Called once, by `_start`, with the initial stack pointer.
unsafe extern "C" fn start(stack: *const usize) -> ! {
    // SAFETY: the initial stack holds argc and then argc pointers to
    // NUL-terminated strings.
    let argc = unsafe { *stack };
    let arg = |i: usize| -> &'static [u8] {
        // SAFETY: i < argc, so the pointer is one of the kernel's argv
        // strings, each NUL-terminated and alive for the whole program.
        unsafe {
            let ptr = *stack.add(1 + i) as *const u8;
            let mut len = 0;
            // Volatile, so that the loop is not turned into a call to strlen.
            while ptr.add(len).read_volatile() != 0 {
                len += 1;
            }
            core::slice::from_raw_parts(ptr, len)
        }
    };
    match watch::Args::parse((1..argc).map(arg)) {
        Some(args) => watch::run(args),
        None => raw::exit_group(2),
    }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    raw::exit_group(70)
}

// libcore is built with unwinding; nothing here unwinds (panic=abort), but
// its objects still name the personality routine.
#[no_mangle]
extern "C" fn rust_eh_personality() {}

// What the compiler may call for copies and fills, written with the string
// instructions so that it cannot turn them back into calls to themselves.

/// # Safety
/// As C's `memset`.
#[no_mangle]
unsafe extern "C" fn memset(dest: *mut u8, byte: i32, n: usize) -> *mut u8 {
    // SAFETY: the caller passes `n` writable bytes at `dest`.
    unsafe {
        asm!("rep stosb", inout("rcx") n => _, inout("rdi") dest => _, in("al") byte as u8,
             options(nostack, preserves_flags));
    }
    dest
}

/// # Safety
/// As C's `memcpy`.
#[no_mangle]
unsafe extern "C" fn memcpy(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller passes `n` bytes at each, not overlapping.
    unsafe {
        asm!("rep movsb", inout("rcx") n => _, inout("rdi") dest => _, inout("rsi") src => _,
             options(nostack, preserves_flags));
    }
    dest
}

/// # Safety
/// As C's `memmove`.
#[no_mangle]
unsafe extern "C" fn memmove(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dest as usize) <= (src as usize) || (dest as usize) >= (src as usize).wrapping_add(n) {
        // SAFETY: a forward copy is safe when dest is below src or past it.
        return unsafe { memcpy(dest, src, n) };
    }
    // SAFETY: copies backwards (direction flag set, then cleared again as
    // the ABI requires) from the last byte of each.
    unsafe {
        asm!("std", "rep movsb", "cld",
             inout("rcx") n => _, inout("rdi") dest.add(n - 1) => _,
             inout("rsi") src.add(n - 1) => _, options(nostack));
    }
    dest
}

/// # Safety
/// As C's `memcmp`.
#[no_mangle]
unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    while i < n {
        // SAFETY: the caller passes `n` readable bytes at each; volatile so
        // that the loop is not recognised as a call to memcmp.
        let (x, y) = unsafe { (a.add(i).read_volatile(), b.add(i).read_volatile()) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
        i += 1;
    }
    0
}

/// # Safety
/// As C's `bcmp`.
#[no_mangle]
unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: the same contract as memcmp.
    unsafe { memcmp(a, b, n) }
}
