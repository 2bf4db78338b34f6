#!/usr/bin/env bash
# Rebuilds echo.wasm from echo.rs with nothing but rustc (its wasm32-wasip1 code generator and the
# rust-lld linker that ship with every rustc). Nothing is downloaded; the tests use the committed
# echo.wasm, so they need no extra toolchain.
#
# echo.rs is `#![no_core]` because the machines this project is built on have no precompiled standard
# library for wasm32-wasip1 (and `rustup target add` cannot download it there). RUSTC_BOOTSTRAP=1
# lets the stable compiler accept the nightly features that no_core needs. -C link-self-contained=no
# skips wasi-libc's crt1-command.o (not installed either): echo.rs defines `_start` itself.
#
# On a machine with the target installed (`rustup target add wasm32-wasip1`), a function is an
# ordinary program instead: `fn main()` that reads stdin to a String, and prints the answer with
# `print!`, built with `cargo build --release --target wasm32-wasip1`; its
# target/wasm32-wasip1/release/NAME.wasm is the `module`.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
RUSTC_BOOTSTRAP=1 rustc --edition 2024 --target wasm32-wasip1 --crate-type bin \
    -C opt-level=s -C panic=abort -C debuginfo=0 -C link-self-contained=no \
    "$here/echo.rs" -o "$here/echo.wasm"
echo "built $here/echo.wasm ($(wc -c < "$here/echo.wasm") bytes)"
