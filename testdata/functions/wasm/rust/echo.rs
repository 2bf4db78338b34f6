//! A Switchyard wasm function written in Rust: it reads the request (`{"event": ..., "context": ...}`)
//! from stdin, logs one line to stderr, and answers on stdout with
//! `{"statusCode": 200, "headers": {...}, "body": {"runtime": "rust", "bytes": N, "request": <the request>}}`.
//!
//! Why `#![no_core]`: the machines this project is built on have rustc with the `wasm32-wasip1`
//! code generator and `rust-lld`, but not the target's precompiled standard library, and it cannot be
//! downloaded there. Without `core` the few language items the compiler needs are declared below, and
//! the WASI preview 1 functions (`fd_read`, `fd_write`, `proc_exit`) are imported directly. This needs
//! nightly features, enabled on the stable compiler with RUSTC_BOOTSTRAP=1 (see build.sh). With the
//! target's standard library installed, the same function is an ordinary `fn main()` that reads
//! stdin and prints (build.sh says how).

#![feature(no_core, lang_items, auto_traits)]
#![allow(internal_features)]
#![no_core]
#![no_main]

// ---- The language items the compiler needs (what `core` would otherwise provide) ----

#[lang = "pointee_sized"]
pub trait PointeeSized {}
#[lang = "meta_sized"]
pub trait MetaSized: PointeeSized {}
#[lang = "sized"]
pub trait Sized: MetaSized {}
#[lang = "copy"]
pub trait Copy {}
#[lang = "freeze"]
pub unsafe auto trait Freeze {}
#[lang = "legacy_receiver"]
pub trait LegacyReceiver: PointeeSized {}
impl<T: PointeeSized> LegacyReceiver for &T {}
impl<T: PointeeSized> LegacyReceiver for &mut T {}

/// Dropping needs no work here: nothing in this program owns resources.
#[lang = "drop_in_place"]
fn drop_in_place<T: PointeeSized>(_: *mut T) {}

impl Copy for u8 {}
impl Copy for i32 {}
impl Copy for usize {}
impl<T: PointeeSized> Copy for *const T {}
impl<T: PointeeSized> Copy for *mut T {}

#[lang = "add"]
pub trait Add<Rhs = Self> {
    type Output;
    fn add(self, rhs: Rhs) -> Self::Output;
}
#[lang = "sub"]
pub trait Sub<Rhs = Self> {
    type Output;
    fn sub(self, rhs: Rhs) -> Self::Output;
}
#[lang = "div"]
pub trait Div<Rhs = Self> {
    type Output;
    fn div(self, rhs: Rhs) -> Self::Output;
}
#[lang = "rem"]
pub trait Rem<Rhs = Self> {
    type Output;
    fn rem(self, rhs: Rhs) -> Self::Output;
}
#[lang = "eq"]
pub trait PartialEq<Rhs: PointeeSized = Self> {
    fn eq(&self, other: &Rhs) -> bool;
    fn ne(&self, other: &Rhs) -> bool;
}

// The bodies use the built-in operators on primitives; these impls only let the type checker see them.
impl Add for usize {
    type Output = usize;
    fn add(self, rhs: usize) -> usize {
        self + rhs
    }
}
impl Add for u8 {
    type Output = u8;
    fn add(self, rhs: u8) -> u8 {
        self + rhs
    }
}
impl Sub for usize {
    type Output = usize;
    fn sub(self, rhs: usize) -> usize {
        self - rhs
    }
}
impl Div for usize {
    type Output = usize;
    fn div(self, rhs: usize) -> usize {
        self / rhs
    }
}
impl Rem for usize {
    type Output = usize;
    fn rem(self, rhs: usize) -> usize {
        self % rhs
    }
}
impl PartialEq for usize {
    fn eq(&self, other: &usize) -> bool {
        *self == *other
    }
    fn ne(&self, other: &usize) -> bool {
        *self != *other
    }
}
impl PartialEq for i32 {
    fn eq(&self, other: &i32) -> bool {
        *self == *other
    }
    fn ne(&self, other: &i32) -> bool {
        *self != *other
    }
}

// ---- WASI preview 1 ----

#[repr(C)]
struct Iovec {
    ptr: *const u8,
    len: usize,
}

#[link(wasm_import_module = "wasi_snapshot_preview1")]
unsafe extern "C" {
    fn fd_read(fd: i32, iovs: *const Iovec, iovs_len: usize, nread: *mut usize) -> i32;
    fn fd_write(fd: i32, iovs: *const Iovec, iovs_len: usize, nwritten: *mut usize) -> i32;
    fn proc_exit(code: i32) -> !;
}

const STDIN: i32 = 0;
const STDOUT: i32 = 1;
const STDERR: i32 = 2;
/// The largest request this function accepts.
const CAPACITY: usize = 1_048_576;

static mut REQUEST: [u8; CAPACITY] = [0; CAPACITY];

/// Writes all of `len` bytes at `ptr` to `fd`, or exits with status 3.
fn write(fd: i32, ptr: *const u8, len: usize) {
    let mut done = 0;
    loop {
        if done == len {
            return;
        }
        let iov = Iovec { ptr: (ptr as usize + done) as *const u8, len: len - done };
        let mut n = 0;
        // SAFETY: the iovec points at `len - done` readable bytes; `n` is a valid out-pointer.
        if unsafe { fd_write(fd, &iov, 1, &mut n) } != 0 {
            unsafe { proc_exit(3) }
        }
        done = done + n;
    }
}

fn text<const N: usize>(fd: i32, s: &[u8; N]) {
    write(fd, s as *const [u8; N] as *const u8, N);
}

/// Writes `n` in decimal.
fn number(fd: i32, mut n: usize) {
    let mut digits = [0u8; 20];
    let end = &raw mut digits as usize + 20;
    let mut at = end;
    loop {
        at = at - 1;
        // SAFETY: `at` stays within `digits` (a usize has at most 20 decimal digits).
        unsafe { *(at as *mut u8) = (n % 10) as u8 + b'0' };
        n = n / 10;
        if n == 0 {
            break;
        }
    }
    write(fd, at as *const u8, end - at);
}

#[unsafe(no_mangle)]
pub extern "C" fn _start() {
    let buf = &raw mut REQUEST as usize;
    let mut len = 0;
    loop {
        if len == CAPACITY {
            text(STDERR, b"request larger than 1 MiB\n");
            unsafe { proc_exit(1) }
        }
        let iov = Iovec { ptr: (buf + len) as *const u8, len: CAPACITY - len };
        let mut n = 0;
        // SAFETY: the iovec points into REQUEST, which only this function uses.
        if unsafe { fd_read(STDIN, &iov, 1, &mut n) } != 0 {
            text(STDERR, b"cannot read stdin\n");
            unsafe { proc_exit(1) }
        }
        if n == 0 {
            break;
        }
        len = len + n;
    }
    text(STDERR, b"rust handler: request of ");
    number(STDERR, len);
    text(STDERR, b" bytes\n");
    text(STDOUT, b"{\"statusCode\": 200, \"headers\": {\"content-type\": \"application/json\"}, \"body\": {\"runtime\": \"rust\", \"bytes\": ");
    number(STDOUT, len);
    text(STDOUT, b", \"request\": ");
    write(STDOUT, buf as *const u8, len);
    text(STDOUT, b"}}");
}
