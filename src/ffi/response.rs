//! `sy_response`: a provider's answer.

use std::ffi::{c_char, CString};
use std::sync::OnceLock;

use super::{c_string, guarded, str_arg, sy_status};
use crate::Response;

/// An answer: status, headers, body, the provider that gave it. Owned by the caller;
/// free with `sy_response_free`. Read-only, so it may be read from several threads at
/// once. Strings and the body pointer it returns live until `sy_response_free`.
pub struct sy_response {
    inner: Response,
    provider: CString,
    /// Names (lowercase) and values, NUL-terminated; made on first use, since most
    /// callers read only the status and the body.
    headers: OnceLock<Vec<(CString, CString)>>,
    /// Every header as "name: value" lines; made on first use.
    headers_text: OnceLock<CString>,
}

impl sy_response {
    pub(crate) fn boxed(inner: Response) -> *mut sy_response {
        let provider = c_string(inner.provider().to_string());
        Box::into_raw(Box::new(sy_response {
            inner,
            provider,
            headers: OnceLock::new(),
            headers_text: OnceLock::new(),
        }))
    }

    fn headers(&self) -> &[(CString, CString)] {
        self.headers.get_or_init(|| {
            self.inner
                .headers()
                .map(|(n, v)| (c_string(n.to_string()), c_string(v.to_string())))
                .collect()
        })
    }
}

/// Reads through a response pointer inside the panic boundary; `fallback` for NULL.
fn with<T: Copy>(
    response: *const sy_response,
    fallback: T,
    f: impl FnOnce(&sy_response) -> T,
) -> T {
    guarded(fallback, || {
        // SAFETY: NULL or a live sy_response, per the header.
        match unsafe { response.as_ref() } {
            Some(r) => f(r),
            None => fallback,
        }
    })
}

/// The HTTP status code; 0 for NULL.
#[no_mangle]
pub extern "C" fn sy_response_status(response: *const sy_response) -> u16 {
    with(response, 0, |r| r.inner.status())
}

/// The body and, through `len_out` (may be NULL), its length. The pointer is valid until
/// `sy_response_free`; it is not NUL-terminated. NULL (and length 0) for NULL.
#[no_mangle]
pub extern "C" fn sy_response_body(response: *const sy_response, len_out: *mut usize) -> *const u8 {
    bytes_of(response, len_out, Response::body)
}

/// The bytes `part` gives of a response, their length through `len_out` (may be NULL).
fn bytes_of(
    response: *const sy_response,
    len_out: *mut usize,
    part: fn(&Response) -> &[u8],
) -> *const u8 {
    let (ptr, len) = with(response, (std::ptr::null(), 0), |r| {
        let bytes = part(&r.inner);
        (bytes.as_ptr(), bytes.len())
    });
    if !len_out.is_null() {
        // SAFETY: non-NULL and, per the header, writable storage for one size_t.
        unsafe { *len_out = len };
    }
    ptr
}

/// The provider's own body when the endpoint's `shape` made the body from it, otherwise
/// the body itself (the same pointer as `sy_response_body`); its length through
/// `len_out` (may be NULL). Valid until `sy_response_free`. NULL (and 0) for NULL.
#[no_mangle]
pub extern "C" fn sy_response_raw_body(
    response: *const sy_response,
    len_out: *mut usize,
) -> *const u8 {
    bytes_of(response, len_out, Response::raw_body)
}

/// Whether the answer came from the endpoint's cache (`cache_ttl_ms`); false for NULL.
#[no_mangle]
pub extern "C" fn sy_response_from_cache(response: *const sy_response) -> bool {
    with(response, false, |r| r.inner.from_cache())
}

/// The first header of that name (case-insensitive), or NULL when absent (or for NULL
/// arguments). Valid until `sy_response_free`.
#[no_mangle]
pub extern "C" fn sy_response_header(
    response: *const sy_response,
    name: *const c_char,
) -> *const c_char {
    with(response, std::ptr::null(), |r| {
        // SAFETY: NULL or a NUL-terminated string, per the header.
        let Ok(name) = (unsafe { str_arg(name, "name") }) else {
            return std::ptr::null();
        };
        r.headers()
            .iter()
            .find(|(n, _)| n.to_bytes().eq_ignore_ascii_case(name.as_bytes()))
            .map_or(std::ptr::null(), |(_, v)| v.as_ptr())
    })
}

/// Every header as "name: value" lines, each ending in "\n", names lowercase, in one
/// string (for bindings: one call instead of one per header). Valid until
/// `sy_response_free`; "" for NULL.
#[no_mangle]
pub extern "C" fn sy_response_headers(response: *const sy_response) -> *const c_char {
    with(response, c"".as_ptr(), |r| {
        r.headers_text
            .get_or_init(|| {
                let mut text = String::new();
                for (name, value) in r.inner.headers() {
                    text.push_str(name);
                    text.push_str(": ");
                    text.push_str(value);
                    text.push('\n');
                }
                c_string(text)
            })
            .as_ptr()
    })
}

/// How many headers the response has; 0 for NULL.
#[no_mangle]
pub extern "C" fn sy_response_header_count(response: *const sy_response) -> usize {
    with(response, 0, |r| r.headers().len())
}

/// The name (lowercase) of header `index`, or NULL when out of range. Valid until
/// `sy_response_free`.
#[no_mangle]
pub extern "C" fn sy_response_header_name(
    response: *const sy_response,
    index: usize,
) -> *const c_char {
    header_part(response, index, |(name, _)| name)
}

/// The value of header `index`, or NULL when out of range. Valid until `sy_response_free`.
#[no_mangle]
pub extern "C" fn sy_response_header_value(
    response: *const sy_response,
    index: usize,
) -> *const c_char {
    header_part(response, index, |(_, value)| value)
}

/// The name or the value of header `index`, NULL when out of range.
fn header_part(
    response: *const sy_response,
    index: usize,
    part: fn(&(CString, CString)) -> &CString,
) -> *const c_char {
    with(response, std::ptr::null(), |r| {
        r.headers()
            .get(index)
            .map_or(std::ptr::null(), |h| part(h).as_ptr())
    })
}

/// The name of the provider that answered ("fallback" for a fallback's answer).
/// Valid until `sy_response_free`; "" for NULL.
#[no_mangle]
pub extern "C" fn sy_response_provider(response: *const sy_response) -> *const c_char {
    with(response, c"".as_ptr(), |r| r.provider.as_ptr())
}

/// How many attempts it took, this one included; 0 for NULL.
#[no_mangle]
pub extern "C" fn sy_response_attempts(response: *const sy_response) -> u32 {
    with(response, 0, |r| r.inner.attempts())
}

/// From submission to answer, in microseconds; 0 for NULL.
#[no_mangle]
pub extern "C" fn sy_response_latency_us(response: *const sy_response) -> u64 {
    with(response, 0, |r| r.inner.latency().as_micros() as u64)
}

/// Time spent waiting for a worker or a connection slot, in microseconds; 0 for NULL.
#[no_mangle]
pub extern "C" fn sy_response_queue_wait_us(response: *const sy_response) -> u64 {
    with(response, 0, |r| r.inner.queue_wait().as_micros() as u64)
}

/// Everything about a response in one struct, for bindings that pay per native call.
/// The pointers live until `sy_response_free`.
#[repr(C)]
pub struct sy_response_view {
    /// The HTTP status code.
    pub status: u16,
    /// Attempts it took, this one included.
    pub attempts: u32,
    /// From submission to answer, in microseconds.
    pub latency_us: u64,
    /// The body (not NUL-terminated) and its length.
    pub body: *const u8,
    /// The body's length in bytes.
    pub body_len: usize,
    /// The provider that answered, NUL-terminated.
    pub provider: *const c_char,
    /// Every header as "name: value\n" lines, as `sy_response_headers`.
    pub headers: *const c_char,
    /// Time spent waiting for a worker or a connection slot, in microseconds.
    pub queue_wait_us: u64,
    /// As `sy_response_raw_body`: the same pointer as `body` unless a shape applied.
    pub raw_body: *const u8,
    /// The raw body's length in bytes.
    pub raw_body_len: usize,
    /// Whether the answer came from the endpoint's cache.
    pub from_cache: bool,
}

/// Fills `view_out` with everything about the response at once.
#[no_mangle]
pub extern "C" fn sy_response_view_of(
    response: *const sy_response,
    view_out: *mut sy_response_view,
) -> sy_status {
    super::boundary(std::ptr::null_mut(), || {
        // SAFETY: NULL or a live sy_response, per the header.
        let r = unsafe { super::ref_arg(response, "response") }?;
        if view_out.is_null() {
            return Err(crate::Error::InvalidArgument("`view_out` is NULL".into()));
        }
        // SAFETY: non-NULL and, per the header, writable storage for one sy_response_view.
        unsafe { view_out.write(view_of(r, response)) };
        Ok(())
    })
}

/// The view of `r`, which `response` points to.
pub(super) fn view_of(r: &sy_response, response: *const sy_response) -> sy_response_view {
    sy_response_view {
        status: r.inner.status(),
        attempts: r.inner.attempts(),
        latency_us: r.inner.latency().as_micros() as u64,
        body: r.inner.body().as_ptr(),
        body_len: r.inner.body().len(),
        provider: r.provider.as_ptr(),
        headers: sy_response_headers(response),
        queue_wait_us: r.inner.queue_wait().as_micros() as u64,
        raw_body: r.inner.raw_body().as_ptr(),
        raw_body_len: r.inner.raw_body().len(),
        from_cache: r.inner.from_cache(),
    }
}

/// Frees a response. Calling with NULL is fine. Must not be called twice with the same value.
#[no_mangle]
pub extern "C" fn sy_response_free(response: *mut sy_response) {
    guarded((), || {
        if !response.is_null() {
            // SAFETY: a pointer from sy_response::boxed, freed once, per the header.
            drop(unsafe { Box::from_raw(response) });
        }
    })
}
