//! `sy_request`: a request being built.

use std::ffi::c_char;
use std::time::Duration;

use super::{boundary, guarded, mut_arg, str_arg, sy_status};
use crate::{Error, Method, Priority, Request};

/// Most critical: served before everything else.
pub const SY_PRIORITY_CRITICAL: sy_priority = 0;
/// Served before normal and low.
pub const SY_PRIORITY_HIGH: sy_priority = 1;
/// The default.
pub const SY_PRIORITY_NORMAL: sy_priority = 2;
/// Served when nothing more urgent waits.
pub const SY_PRIORITY_LOW: sy_priority = 3;

/// A request priority: one of the `SY_PRIORITY_*` values.
pub type sy_priority = u32;

/// A request under construction: service, endpoint, method, parameters, headers, body,
/// priority, timeout, idempotency. Owned by the caller; free with `sy_request_free`.
/// Not thread-safe while being built; `sy_call` and `sy_submit` only read it and copy
/// what they need, so one request may be sent many times and freed right after.
pub struct sy_request {
    inner: Request,
}

impl sy_request {
    pub(crate) fn request(&self) -> &Request {
        &self.inner
    }
}

/// A GET request to `endpoint` (an endpoint name, or a raw path starting with `/`) of
/// `service`. Returns NULL when either is NULL, not UTF-8 or empty.
#[no_mangle]
pub extern "C" fn sy_request_new(
    service: *const c_char,
    endpoint: *const c_char,
) -> *mut sy_request {
    guarded(std::ptr::null_mut(), || {
        // SAFETY: NULL or NUL-terminated strings, per the header.
        let parsed = unsafe { (str_arg(service, "service"), str_arg(endpoint, "endpoint")) };
        match parsed {
            (Ok(s), Ok(e)) if !s.is_empty() && !e.is_empty() => {
                Box::into_raw(Box::new(sy_request {
                    inner: Request::get(s, e),
                }))
            }
            _ => std::ptr::null_mut(),
        }
    })
}

/// Rebuilds the request with the Rust API's builder, checking the pointer first; on an
/// error the request is left as it was.
fn edit(req: *mut sy_request, edit: impl FnOnce(Request) -> Edited) -> sy_status {
    boundary(std::ptr::null_mut(), || {
        // SAFETY: NULL or a live sy_request used by this thread only, per the header.
        let req = unsafe { mut_arg(req, "req") }?;
        let taken = std::mem::replace(&mut req.inner, Request::get(String::new(), String::new()));
        let (request, result) = edit(taken);
        req.inner = request;
        result
    })
}

/// The request after an edit (unchanged when the edit was refused), and whether it was.
type Edited = (Request, Result<(), Error>);

fn done(r: Request) -> Edited {
    (r, Ok(()))
}

/// Checks one setting as sending the request would, on a request that has only it, so
/// the setter that would break the request reports it and the request stays as it was.
fn check_alone(r: Request, setting: impl Fn(Request) -> Request) -> Edited {
    match setting(Request::get("s", "/")).validate() {
        Ok(()) => done(setting(r)),
        Err(e) => (r, Err(e)),
    }
}

/// Sets the method: GET, HEAD, POST, PUT, PATCH, DELETE or OPTIONS (any case).
#[no_mangle]
pub extern "C" fn sy_request_set_method(req: *mut sy_request, method: *const c_char) -> sy_status {
    edit(req, |r| {
        // SAFETY: NULL or a NUL-terminated string, per the header.
        match unsafe { str_arg(method, "method") }.and_then(|m| m.parse::<Method>()) {
            Ok(m) => done(r.method(m)),
            Err(e) => (r, Err(e)),
        }
    })
}

/// Adds a parameter: it fills `{name}` in a provider's path template, or else goes into
/// the query string. Both strings are copied.
#[no_mangle]
pub extern "C" fn sy_request_add_param(
    req: *mut sy_request,
    name: *const c_char,
    value: *const c_char,
) -> sy_status {
    edit(req, |r| {
        // SAFETY: NULL or NUL-terminated strings, per the header.
        match unsafe { (str_arg(name, "name"), str_arg(value, "value")) } {
            (Ok(n), Ok(v)) => done(r.param(n, v)),
            (Err(e), _) | (_, Err(e)) => (r, Err(e)),
        }
    })
}

/// Adds a header, sent after the provider's configured ones. Both strings are copied.
#[no_mangle]
pub extern "C" fn sy_request_add_header(
    req: *mut sy_request,
    name: *const c_char,
    value: *const c_char,
) -> sy_status {
    edit(req, |r| {
        // SAFETY: NULL or NUL-terminated strings, per the header.
        match unsafe { (str_arg(name, "name"), str_arg(value, "value")) } {
            (Ok(n), Ok(v)) => check_alone(r, |r| r.header(n, v)),
            (Err(e), _) | (_, Err(e)) => (r, Err(e)),
        }
    })
}

/// Sets the body: `len` bytes at `data` are copied. `data` may be NULL only when `len` is 0.
#[no_mangle]
pub extern "C" fn sy_request_set_body(
    req: *mut sy_request,
    data: *const u8,
    len: usize,
) -> sy_status {
    edit(req, |r| {
        if len > isize::MAX as usize {
            return (
                r,
                Err(Error::InvalidArgument(format!("`len` {len} is too large"))),
            );
        }
        let body = if len == 0 {
            Vec::new()
        } else if data.is_null() {
            let e = Error::InvalidArgument("`data` is NULL but `len` is not 0".into());
            return (r, Err(e));
        } else {
            // SAFETY: non-NULL, len <= isize::MAX, and the caller guarantees `len` readable
            // bytes at `data`, per the header.
            unsafe { std::slice::from_raw_parts(data, len) }.to_vec()
        };
        done(r.body(body))
    })
}

/// Sets the priority: `SY_PRIORITY_CRITICAL`, `_HIGH`, `_NORMAL` (the default) or `_LOW`.
#[no_mangle]
pub extern "C" fn sy_request_set_priority(
    req: *mut sy_request,
    priority: sy_priority,
) -> sy_status {
    edit(req, |r| match Priority::ALL.get(priority as usize) {
        Some(&p) => done(r.priority(p)),
        None => {
            let e = Error::InvalidArgument(format!(
                "`priority` {priority} is not one of SY_PRIORITY_CRITICAL..SY_PRIORITY_LOW (0..3)"
            ));
            (r, Err(e))
        }
    })
}

/// Sets the whole request's deadline in ms (queue wait, attempts and backoff), 1 to
/// 86400000. Defaults to the service's `deadline_ms`.
#[no_mangle]
pub extern "C" fn sy_request_set_timeout_ms(req: *mut sy_request, timeout_ms: u64) -> sy_status {
    edit(req, |r| {
        check_alone(r, |r| r.timeout(Duration::from_millis(timeout_ms)))
    })
}

/// Marks the request safe (or not) to send twice. Defaults to what the method implies.
#[no_mangle]
pub extern "C" fn sy_request_set_idempotent(req: *mut sy_request, idempotent: bool) -> sy_status {
    edit(req, |r| done(r.idempotent(idempotent)))
}

/// Frees a request. Calling with NULL is fine. Must not be called twice with the same value.
#[no_mangle]
pub extern "C" fn sy_request_free(req: *mut sy_request) {
    guarded((), || {
        if !req.is_null() {
            // SAFETY: a pointer from sy_request_new, freed once, per the header.
            drop(unsafe { Box::from_raw(req) });
        }
    })
}
