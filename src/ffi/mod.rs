//! The C ABI. It holds no logic of its own: it checks and converts arguments, calls the
//! Rust API and converts back. Conventions, as in rustls-ffi:
//!
//! - fallible functions return an `sy_status`; `SY_OK` is 0;
//! - inputs first, outputs last; out-params are named `*_out` and written only on success;
//! - every pointer is checked for NULL; every string for UTF-8;
//! - every body runs inside a panic boundary that returns `SY_ERR_INTERNAL`;
//! - every `_free` accepts NULL.

#![allow(non_camel_case_types)]
// These functions are called from C, where `unsafe` means nothing; the preconditions on
// their pointers are in the header, and every dereference sits in a SAFETY-commented block.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

mod balancer;
mod request;
mod response;

use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::Error;

pub use balancer::*;
pub use request::*;
pub use response::*;

/// A result code: `SY_OK` (0) or one of the `SY_ERR_*` kinds. Numbers are never reused.
pub type sy_status = u32;

/// Success.
pub const SY_OK: sy_status = 0;
/// A NULL pointer, a string that is not UTF-8, or a value out of range; the message names it.
pub const SY_ERR_INVALID_ARGUMENT: sy_status = 1;
/// The configuration was refused; the message names the key path and the reason.
pub const SY_ERR_CONFIG: sy_status = 2;
/// The request named a service the configuration does not have.
pub const SY_ERR_UNKNOWN_SERVICE: sy_status = 3;
/// No provider of the service serves the endpoint.
pub const SY_ERR_UNKNOWN_ENDPOINT: sy_status = 4;
/// The service already had `queue.max_size` requests waiting.
pub const SY_ERR_QUEUE_FULL: sy_status = 5;
/// The request's deadline passed, queued or in flight.
pub const SY_ERR_TIMEOUT: sy_status = 6;
/// Nothing could be tried: every eligible provider was unavailable.
pub const SY_ERR_NO_HEALTHY_PROVIDER: sy_status = 7;
/// Every allowed attempt failed; `sy_error_attempts_json` lists them.
pub const SY_ERR_ALL_PROVIDERS_FAILED: sy_status = 8;
/// The balancer is shutting down.
pub const SY_ERR_SHUTTING_DOWN: sy_status = 9;
/// Every attempt failed only because the answer was over `max_response_bytes`.
pub const SY_ERR_RESPONSE_TOO_LARGE: sy_status = 10;
/// A bug inside switchyard, caught at the boundary.
pub const SY_ERR_INTERNAL: sy_status = 11;
/// Nothing could be tried: every eligible provider was out of rate or quota (or what is
/// left is reserved for critical and high requests); the message names each provider and
/// when it frees up.
pub const SY_ERR_QUOTA_EXHAUSTED: sy_status = 12;

/// What a status means, in a sentence: "success" for `SY_OK`, "an unknown status" for a
/// number that is not an `SY_*` code. Never NULL; the string is static: do not free it.
/// Thread-safe.
#[no_mangle]
pub extern "C" fn sy_status_message(code: sy_status) -> *const c_char {
    static MESSAGES: once_cell::sync::Lazy<Vec<CString>> = once_cell::sync::Lazy::new(|| {
        let mut all = vec![c_string("success".into())];
        all.extend(
            crate::ErrorKind::ALL
                .iter()
                .map(|k| c_string(k.describe().into())),
        );
        all.push(c_string("an unknown status".into()));
        all
    });
    guarded(c"an unknown status".as_ptr(), || {
        let index = match crate::ErrorKind::from_code(code) {
            Some(kind) => kind.code() as usize,
            None if code == SY_OK => 0,
            None => MESSAGES.len() - 1,
        };
        MESSAGES[index].as_ptr()
    })
}

/// An error: its kind and a message. Owned by the caller, freed with `sy_error_free`.
/// Not shared between threads while in use.
pub struct sy_error {
    code: sy_status,
    message: CString,
    attempts_json: CString,
    waits_json: CString,
}

impl sy_error {
    fn from_error(e: &Error) -> sy_error {
        let attempts: Vec<serde_json::Value> = e
            .attempts()
            .iter()
            .map(|a| {
                serde_json::json!({
                    "provider": a.provider,
                    "kind": a.kind.name(),
                    "status": a.status,
                    "elapsed_ms": a.elapsed.as_secs_f64() * 1000.0,
                    "message": a.message,
                })
            })
            .collect();
        let waits: Vec<serde_json::Value> = match e {
            Error::QuotaExhausted { waits, .. } => waits
                .iter()
                .map(|w| {
                    serde_json::json!({
                        "provider": w.provider,
                        "reason": w.reason,
                        "frees_in_ms": w.frees_in.map(|d| d.as_millis() as u64),
                    })
                })
                .collect(),
            _ => Vec::new(),
        };
        sy_error {
            code: e.kind().code(),
            message: c_string(e.to_string()),
            attempts_json: c_string(serde_json::Value::Array(attempts).to_string()),
            waits_json: c_string(serde_json::Value::Array(waits).to_string()),
        }
    }

    fn boxed(e: &Error) -> *mut sy_error {
        Box::into_raw(Box::new(sy_error::from_error(e)))
    }
}

/// A CString from text that may hold a NUL (replaced, never an error).
fn c_string(text: String) -> CString {
    CString::new(text).unwrap_or_else(|e| {
        let mut bytes = e.into_vec();
        bytes.retain(|b| *b != 0);
        CString::new(bytes).unwrap_or_default()
    })
}

/// Writes `e` to `error_out` when the caller asked for it; returns its code.
fn fail(error_out: *mut *mut sy_error, e: Error) -> sy_status {
    let code = e.kind().code();
    if !error_out.is_null() {
        // SAFETY: error_out is non-NULL and, per the header, points to writable storage
        // for one pointer.
        unsafe { *error_out = sy_error::boxed(&e) };
    }
    code
}

/// Runs `body` inside the panic boundary: a panic becomes `SY_ERR_INTERNAL`.
fn boundary(error_out: *mut *mut sy_error, body: impl FnOnce() -> Result<(), Error>) -> sy_status {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => SY_OK,
        Ok(Err(e)) => fail(error_out, e),
        Err(_) => fail(
            error_out,
            Error::Internal("a panic was caught at the C boundary".into()),
        ),
    }
}

/// Runs a non-failing accessor inside the panic boundary; `fallback` on panic.
fn guarded<T>(fallback: T, body: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or(fallback)
}

fn null(name: &str) -> Error {
    Error::InvalidArgument(format!("`{name}` is NULL"))
}

/// # Safety
/// `p` is NULL or points to a NUL-terminated string that outlives `'a`.
unsafe fn str_arg<'a>(p: *const c_char, name: &str) -> Result<&'a str, Error> {
    if p.is_null() {
        return Err(null(name));
    }
    // SAFETY: non-NULL, and the caller guarantees a NUL-terminated string living for 'a.
    unsafe { CStr::from_ptr(p) }
        .to_str()
        .map_err(|_| Error::InvalidArgument(format!("`{name}` is not valid UTF-8")))
}

/// # Safety
/// `p` is NULL or points to a live `T` that nothing mutates for `'a`.
unsafe fn ref_arg<'a, T>(p: *const T, name: &str) -> Result<&'a T, Error> {
    // SAFETY: as the caller guarantees.
    unsafe { p.as_ref() }.ok_or_else(|| null(name))
}

/// # Safety
/// `p` is NULL or points to a live `T` that nothing else uses for `'a`.
unsafe fn mut_arg<'a, T>(p: *mut T, name: &str) -> Result<&'a mut T, Error> {
    // SAFETY: as the caller guarantees.
    unsafe { p.as_mut() }.ok_or_else(|| null(name))
}

/// Checks an out-param before any work is done.
fn out_arg<T>(p: *mut *mut T, name: &str) -> Result<(), Error> {
    if p.is_null() {
        return Err(null(name));
    }
    Ok(())
}

/// # Safety
/// `p` is non-NULL and points to writable storage for one pointer.
unsafe fn write_out<T>(p: *mut *mut T, value: *mut T) {
    // SAFETY: as the caller guarantees (checked by `out_arg` first).
    unsafe { *p = value };
}

/// The error's kind. 0 for NULL.
#[no_mangle]
pub extern "C" fn sy_error_code(error: *const sy_error) -> sy_status {
    // SAFETY: NULL or a live sy_error, per the header.
    guarded(SY_ERR_INTERNAL, || {
        unsafe { error.as_ref() }.map_or(SY_OK, |e| e.code)
    })
}

/// The error's message. Valid until `sy_error_free`; "" for NULL.
#[no_mangle]
pub extern "C" fn sy_error_message(error: *const sy_error) -> *const c_char {
    // SAFETY: NULL or a live sy_error, per the header.
    guarded(c"".as_ptr(), || {
        unsafe { error.as_ref() }.map_or(c"".as_ptr(), |e| e.message.as_ptr())
    })
}

/// The failed attempts as a JSON array of objects with keys `provider`, `kind`
/// (`connect`, `timeout`, `status`, `reset`, `protocol`, `too_large`, `quota`, `tls`), `status`
/// (a number or null), `elapsed_ms` and `message`; `[]` for kinds that touch no network.
/// Valid until `sy_error_free`; "[]" for NULL.
#[no_mangle]
pub extern "C" fn sy_error_attempts_json(error: *const sy_error) -> *const c_char {
    // SAFETY: NULL or a live sy_error, per the header.
    guarded(c"[]".as_ptr(), || {
        unsafe { error.as_ref() }.map_or(c"[]".as_ptr(), |e| e.attempts_json.as_ptr())
    })
}

/// For `SY_ERR_QUOTA_EXHAUSTED`: the providers held back, as a JSON array of objects with
/// keys `provider`, `reason` (`quota`, `reserve`, `rate`, `rate_headers`) and
/// `frees_in_ms` (a number, or null when never for this priority); `[]` for other kinds.
/// Valid until `sy_error_free`; "[]" for NULL.
#[no_mangle]
pub extern "C" fn sy_error_waits_json(error: *const sy_error) -> *const c_char {
    // SAFETY: NULL or a live sy_error, per the header.
    guarded(c"[]".as_ptr(), || {
        unsafe { error.as_ref() }.map_or(c"[]".as_ptr(), |e| e.waits_json.as_ptr())
    })
}

/// Frees an error. Calling with NULL is fine. Must not be called twice with the same value.
#[no_mangle]
pub extern "C" fn sy_error_free(error: *mut sy_error) {
    guarded((), || {
        if !error.is_null() {
            // SAFETY: a pointer from Box::into_raw in this module, freed once, per the header.
            drop(unsafe { Box::from_raw(error) });
        }
    })
}

/// Frees a string the library returned through a `char **` out-param.
/// Calling with NULL is fine. Must not be called twice with the same value.
#[no_mangle]
pub extern "C" fn sy_string_free(s: *mut c_char) {
    guarded((), || {
        if !s.is_null() {
            // SAFETY: a pointer from CString::into_raw in this module, freed once.
            drop(unsafe { CString::from_raw(s) });
        }
    })
}

/// The library's version, e.g. "0.1.0". A static string: never free it.
#[no_mangle]
pub extern "C" fn sy_version() -> *const c_char {
    static VERSION: &CStr =
        match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
            Ok(v) => v,
            Err(_) => c"",
        };
    VERSION.as_ptr()
}

/// The status numbers, checked against the one table of kinds.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn status_numbers_are_the_error_kinds() {
        let c = [
            SY_ERR_INVALID_ARGUMENT,
            SY_ERR_CONFIG,
            SY_ERR_UNKNOWN_SERVICE,
            SY_ERR_UNKNOWN_ENDPOINT,
            SY_ERR_QUEUE_FULL,
            SY_ERR_TIMEOUT,
            SY_ERR_NO_HEALTHY_PROVIDER,
            SY_ERR_ALL_PROVIDERS_FAILED,
            SY_ERR_SHUTTING_DOWN,
            SY_ERR_RESPONSE_TOO_LARGE,
            SY_ERR_INTERNAL,
            SY_ERR_QUOTA_EXHAUSTED,
        ];
        let kinds: Vec<u32> = ErrorKind::ALL.iter().map(|k| k.code()).collect();
        assert_eq!(c.to_vec(), kinds);
    }

    #[test]
    fn every_status_has_a_message() {
        let text = |code| {
            // SAFETY: sy_status_message returns a static NUL-terminated string.
            unsafe { CStr::from_ptr(sy_status_message(code)) }
                .to_str()
                .unwrap()
                .to_string()
        };
        assert_eq!(text(SY_OK), "success");
        assert_eq!(text(SY_ERR_TIMEOUT), "the request's deadline passed");
        assert_eq!(text(13), "an unknown status");
        assert_eq!(text(u32::MAX), "an unknown status");
        for kind in ErrorKind::ALL {
            assert_eq!(text(kind.code()), kind.describe());
        }
    }

    #[test]
    fn messages_never_hold_a_nul() {
        assert_eq!(c_string("a\0b".into()).to_str().unwrap(), "ab");
    }
}
