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

/// The longest per-request timeout accepted: a day.
const MAX_TIMEOUT_MS: u64 = 86_400_000;

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

/// Runs `edit` on the request, checking the pointer first.
fn edit(req: *mut sy_request, edit: impl FnOnce(&mut Request) -> Result<(), Error>) -> sy_status {
    boundary(std::ptr::null_mut(), || {
        // SAFETY: NULL or a live sy_request used by this thread only, per the header.
        let req = unsafe { mut_arg(req, "req") }?;
        edit(&mut req.inner)
    })
}

/// Sets the method: GET, HEAD, POST, PUT, PATCH, DELETE or OPTIONS (any case).
#[no_mangle]
pub extern "C" fn sy_request_set_method(req: *mut sy_request, method: *const c_char) -> sy_status {
    edit(req, |r| {
        // SAFETY: NULL or a NUL-terminated string, per the header.
        let m: Method = unsafe { str_arg(method, "method") }?.parse()?;
        r.method = m;
        Ok(())
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
        let (n, v) = unsafe { (str_arg(name, "name")?, str_arg(value, "value")?) };
        r.params.push((n.to_string(), v.to_string()));
        Ok(())
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
        let (n, v) = unsafe { (str_arg(name, "name")?, str_arg(value, "value")?) };
        crate::foundation::request::check_header(n, v)?;
        r.headers.push((n.to_string(), v.to_string()));
        Ok(())
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
            return Err(Error::InvalidArgument(format!("`len` {len} is too large")));
        }
        let body = if len == 0 {
            Vec::new()
        } else if data.is_null() {
            return Err(Error::InvalidArgument(
                "`data` is NULL but `len` is not 0".into(),
            ));
        } else {
            // SAFETY: non-NULL, len <= isize::MAX, and the caller guarantees `len` readable
            // bytes at `data`, per the header.
            unsafe { std::slice::from_raw_parts(data, len) }.to_vec()
        };
        r.body = Some(body);
        Ok(())
    })
}

/// Sets the priority: `SY_PRIORITY_CRITICAL`, `_HIGH`, `_NORMAL` (the default) or `_LOW`.
#[no_mangle]
pub extern "C" fn sy_request_set_priority(
    req: *mut sy_request,
    priority: sy_priority,
) -> sy_status {
    edit(req, |r| {
        r.priority = *Priority::ALL.get(priority as usize).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "`priority` {priority} is not one of SY_PRIORITY_CRITICAL..SY_PRIORITY_LOW (0..3)"
            ))
        })?;
        Ok(())
    })
}

/// Sets the whole request's deadline in ms (queue wait, attempts and backoff), 1 to
/// 86400000. Defaults to the service's `deadline_ms`.
#[no_mangle]
pub extern "C" fn sy_request_set_timeout_ms(req: *mut sy_request, timeout_ms: u64) -> sy_status {
    edit(req, |r| {
        if timeout_ms == 0 || timeout_ms > MAX_TIMEOUT_MS {
            return Err(Error::InvalidArgument(format!(
                "`timeout_ms` {timeout_ms} is not between 1 and {MAX_TIMEOUT_MS}"
            )));
        }
        r.timeout = Some(Duration::from_millis(timeout_ms));
        Ok(())
    })
}

/// Marks the request safe (or not) to send twice. Defaults to what the method implies.
#[no_mangle]
pub extern "C" fn sy_request_set_idempotent(req: *mut sy_request, idempotent: bool) -> sy_status {
    edit(req, |r| {
        r.idempotent = Some(idempotent);
        Ok(())
    })
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
