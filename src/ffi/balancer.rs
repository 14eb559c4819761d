//! `sy_balancer`: the balancer, and the calls that go through it.

use std::ffi::{c_char, c_void, CString};
use std::time::Duration;

use super::{
    boundary, c_string, guarded, out_arg, ref_arg, str_arg, sy_error, sy_request, sy_response,
    sy_status, write_out,
};
use crate::foundation::config::{Config, Format, StrategyKind};
use crate::{Balancer, Error};

/// A load balancer. Owned by the caller; free with `sy_balancer_free`. Thread-safe: one
/// balancer may be used from many threads at once, except that `sy_balancer_free` must
/// come after every other call on it has returned.
pub struct sy_balancer {
    inner: Balancer,
}

/// Called exactly once per `sy_submit` that returned `SY_OK`, on a worker thread, with
/// either a response or an error (the other NULL). The callback owns what it receives and
/// frees it with `sy_response_free` or `sy_error_free`.
pub type sy_callback = Option<
    unsafe extern "C" fn(user_data: *mut c_void, response: *mut sy_response, error: *mut sy_error),
>;

/// Called on every circuit state change with the service, the provider and the states
/// left and entered (`closed`, `open`, `half_open`). Calls come one at a time, in order,
/// on the balancer's events thread, with no lock held: the callback may block or call the
/// balancer. The strings live only during the call.
pub type sy_circuit_callback = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        service: *const c_char,
        provider: *const c_char,
        from: *const c_char,
        to: *const c_char,
    ),
>;

/// Called with every event (see `sy_on_event`) as one JSON object: `type` (`attempt`,
/// `failover`, `circuit`, `rest`, `quota`), `at_unix_ms`, and the event's own keys. The
/// string lives only during the call.
pub type sy_event_callback =
    Option<unsafe extern "C" fn(user_data: *mut c_void, json: *const c_char)>;

/// A C pointer handed back to C on another thread; switchyard never dereferences it.
#[derive(Clone, Copy)]
struct UserData(*mut c_void);

// SAFETY: switchyard only passes the pointer back to the caller's callback; the header
// makes the caller responsible for what it points to being usable from that thread.
#[allow(unsafe_code)]
unsafe impl Send for UserData {}
// SAFETY: as above; the pointer is only copied, never dereferenced.
#[allow(unsafe_code)]
unsafe impl Sync for UserData {}

fn write_balancer(
    balancer_out: *mut *mut sy_balancer,
    made: Result<Balancer, Error>,
) -> Result<(), Error> {
    let inner = made?;
    // SAFETY: checked non-NULL by the caller through out_arg.
    unsafe { write_out(balancer_out, Box::into_raw(Box::new(sy_balancer { inner }))) };
    Ok(())
}

/// Creates a balancer from a configuration file: JSON when its name ends in `.json`,
/// TOML otherwise. On success writes a new balancer to `balancer_out`.
#[no_mangle]
pub extern "C" fn sy_balancer_from_file(
    path: *const c_char,
    balancer_out: *mut *mut sy_balancer,
    error_out: *mut *mut sy_error,
) -> sy_status {
    boundary(error_out, || {
        out_arg(balancer_out, "balancer_out")?;
        // SAFETY: NULL or a NUL-terminated string, per the header.
        let path = unsafe { str_arg(path, "path") }?;
        write_balancer(balancer_out, Balancer::from_file(path))
    })
}

/// Creates a balancer from configuration text; `format` is "toml", "json", or NULL to
/// detect it (text starting with `{` is JSON). On success writes a new balancer to
/// `balancer_out`.
#[no_mangle]
pub extern "C" fn sy_balancer_from_str(
    text: *const c_char,
    format: *const c_char,
    balancer_out: *mut *mut sy_balancer,
    error_out: *mut *mut sy_error,
) -> sy_status {
    boundary(error_out, || {
        out_arg(balancer_out, "balancer_out")?;
        // SAFETY: NULL or NUL-terminated strings, per the header.
        let text = unsafe { str_arg(text, "text") }?;
        let format = if format.is_null() {
            None
        } else {
            // SAFETY: as above.
            match unsafe { str_arg(format, "format") }? {
                f if f.eq_ignore_ascii_case("toml") => Some(Format::Toml),
                f if f.eq_ignore_ascii_case("json") => Some(Format::Json),
                f => {
                    return Err(Error::InvalidArgument(format!(
                        "`format` \"{f}\" is not \"toml\", \"json\" or NULL"
                    )))
                }
            }
        };
        write_balancer(
            balancer_out,
            Config::from_str_as(text, format).and_then(Balancer::new),
        )
    })
}

/// The balancer behind a pointer.
fn lb<'a>(balancer: *const sy_balancer) -> Result<&'a Balancer, Error> {
    // SAFETY: NULL or a live sy_balancer, which is Sync, per the header.
    Ok(&unsafe { ref_arg(balancer, "balancer") }?.inner)
}

/// Stops taking requests, lets queued and running ones finish for up to `grace_ms`, then
/// ends the rest with `SY_ERR_SHUTTING_DOWN`. Calling it again is harmless.
#[no_mangle]
pub extern "C" fn sy_balancer_shutdown(balancer: *mut sy_balancer, grace_ms: u64) -> sy_status {
    boundary(std::ptr::null_mut(), || {
        lb(balancer)?.shutdown(Duration::from_millis(grace_ms));
        Ok(())
    })
}

/// Shuts the balancer down with no grace (if not done yet) and frees it. Calling with
/// NULL is fine. Must not be called twice with the same value, nor while another thread
/// still uses the balancer.
#[no_mangle]
pub extern "C" fn sy_balancer_free(balancer: *mut sy_balancer) {
    guarded((), || {
        if !balancer.is_null() {
            // SAFETY: a pointer from sy_balancer_from_*, freed once, per the header.
            let b = unsafe { Box::from_raw(balancer) };
            b.inner.shutdown(Duration::ZERO);
        }
    })
}

/// Sends a request and blocks until its outcome. On success writes a new response to
/// `response_out`; on failure the status says which kind and `error_out` (may be NULL)
/// gets the details. The request is only read: it may be sent again or freed after.
#[no_mangle]
pub extern "C" fn sy_call(
    balancer: *mut sy_balancer,
    req: *const sy_request,
    response_out: *mut *mut sy_response,
    error_out: *mut *mut sy_error,
) -> sy_status {
    boundary(error_out, || {
        out_arg(response_out, "response_out")?;
        let lb = lb(balancer)?;
        // SAFETY: NULL or a live sy_request not being modified meanwhile, per the header.
        let req = unsafe { ref_arg(req, "req") }?;
        let response = lb.call(req.request().clone())?;
        // SAFETY: checked non-NULL above.
        unsafe { write_out(response_out, sy_response::boxed(response)) };
        Ok(())
    })
}

/// A GET in one native call, for bindings that pay for each: builds the request from
/// `service`, `endpoint` and `params` (`params_len` bytes of NUL-terminated names and
/// values, in turn: `"symbol\0AAPL\0"`; NULL or empty for none), sends it as `sy_call`
/// does and, on `SY_OK`, writes the response to `response_out` (the caller's; free with
/// `sy_response_free`) and, unless `view_out` is NULL, its view as `sy_response_view_of`.
#[no_mangle]
#[allow(clippy::too_many_arguments)] // one native call is the point
pub extern "C" fn sy_call_get(
    balancer: *mut sy_balancer,
    service: *const c_char,
    endpoint: *const c_char,
    params: *const u8,
    params_len: usize,
    response_out: *mut *mut sy_response,
    view_out: *mut super::sy_response_view,
    error_out: *mut *mut sy_error,
) -> sy_status {
    boundary(error_out, || {
        out_arg(response_out, "response_out")?;
        let lb = lb(balancer)?;
        // SAFETY: NULL or NUL-terminated strings, per the header.
        let (service, endpoint) =
            unsafe { (str_arg(service, "service")?, str_arg(endpoint, "endpoint")?) };
        if service.is_empty() || endpoint.is_empty() {
            return Err(Error::InvalidArgument(
                "`service` and `endpoint` must be non-empty".into(),
            ));
        }
        let mut request = crate::Request::get(service, endpoint);
        if !params.is_null() && params_len > 0 {
            // SAFETY: non-NULL and, per the header, `params_len` readable bytes.
            let bytes = unsafe { std::slice::from_raw_parts(params, params_len) };
            request = with_params(request, bytes)?;
        }
        let response = sy_response::boxed(lb.call(request)?);
        if !view_out.is_null() {
            // SAFETY: just made, live until the caller frees it; `view_out` is writable
            // storage for one view, per the header.
            unsafe { view_out.write(super::response::view_of(&*response, response)) };
        }
        // SAFETY: checked non-NULL above.
        unsafe { write_out(response_out, response) };
        Ok(())
    })
}

/// The request with the parameters of `"name\0value\0..."` added, read in place.
fn with_params(mut request: crate::Request, bytes: &[u8]) -> Result<crate::Request, Error> {
    fn text<'a>(piece: &'a [u8], what: &str) -> Result<&'a str, Error> {
        std::str::from_utf8(piece)
            .map_err(|_| Error::InvalidArgument(format!("a parameter {what} is not valid UTF-8")))
    }
    let Some(body) = bytes.strip_suffix(b"\0") else {
        return Err(Error::InvalidArgument(
            "`params` does not end with a NUL".into(),
        ));
    };
    let mut pieces = body.split(|b| *b == 0);
    while let Some(name) = pieces.next() {
        let value = pieces.next().ok_or_else(|| {
            Error::InvalidArgument("`params` holds a name without a value".into())
        })?;
        request = request.param(text(name, "name")?, text(value, "value")?);
    }
    Ok(request)
}

/// Queues a request and returns at once. On `SY_OK`, `callback` is called exactly once
/// later, on a worker thread, with `user_data` and the outcome (see `sy_callback`). On any
/// other status the callback is never called. The request is only read.
#[no_mangle]
pub extern "C" fn sy_submit(
    balancer: *mut sy_balancer,
    req: *const sy_request,
    callback: sy_callback,
    user_data: *mut c_void,
    error_out: *mut *mut sy_error,
) -> sy_status {
    boundary(error_out, || {
        let lb = lb(balancer)?;
        // SAFETY: NULL or a live sy_request not being modified meanwhile, per the header.
        let req = unsafe { ref_arg(req, "req") }?;
        let callback =
            callback.ok_or_else(|| Error::InvalidArgument("`callback` is NULL".into()))?;
        let user_data = UserData(user_data);
        lb.submit_with(req.request().clone(), move |outcome| {
            let user_data = user_data;
            let (response, error) = match outcome {
                Ok(r) => (sy_response::boxed(r), std::ptr::null_mut()),
                Err(e) => (std::ptr::null_mut(), sy_error::boxed(&e)),
            };
            // SAFETY: a C function pointer the caller gave us for exactly this call,
            // with the user_data it gave; ownership of both objects passes to it.
            unsafe { callback(user_data.0, response, error) };
        })
    })
}

/// Writes a string for the caller to free with `sy_string_free`.
fn string_out(out: *mut *mut c_char, text: String) {
    // SAFETY: checked non-NULL by the caller through out_arg.
    unsafe { write_out(out, c_string(text).into_raw()) };
}

/// Writes every counter as JSON (the documented metrics snapshot) to `json_out`; free it
/// with `sy_string_free`.
#[no_mangle]
pub extern "C" fn sy_metrics_json(
    balancer: *mut sy_balancer,
    json_out: *mut *mut c_char,
) -> sy_status {
    boundary(std::ptr::null_mut(), || {
        out_arg(json_out, "json_out")?;
        let json = serde_json::to_string(&lb(balancer)?.metrics())
            .map_err(|e| Error::Internal(e.to_string()))?;
        string_out(json_out, json);
        Ok(())
    })
}

/// Writes the decision for a request as JSON to `json_out` (free it with
/// `sy_string_free`), without sending anything: `pick` (a provider's name or null),
/// `why`, `strategy`, and `candidates`, each with `provider`, `tier`, `circuit`,
/// `resting_reason`, `resting_ms`, `rate_remaining`, `quota_remaining`, `in_flight`,
/// `max_connections`, `health_down`, `score` and `skipped` (why it cannot be the pick,
/// or null). The request is only read; a bad one fails as `sy_call` would.
#[no_mangle]
pub extern "C" fn sy_explain_json(
    balancer: *mut sy_balancer,
    req: *const sy_request,
    json_out: *mut *mut c_char,
    error_out: *mut *mut sy_error,
) -> sy_status {
    boundary(error_out, || {
        out_arg(json_out, "json_out")?;
        let lb = lb(balancer)?;
        // SAFETY: NULL or a live sy_request not being modified meanwhile, per the header.
        let req = unsafe { ref_arg(req, "req") }?;
        let explained = lb.explain(req.request())?;
        let json = serde_json::to_string(&explained).map_err(|e| Error::Internal(e.to_string()))?;
        string_out(json_out, json);
        Ok(())
    })
}

/// Writes every counter in the Prometheus text format 0.0.4 to `text_out`; free it with
/// `sy_string_free`.
#[no_mangle]
pub extern "C" fn sy_prometheus(
    balancer: *mut sy_balancer,
    text_out: *mut *mut c_char,
) -> sy_status {
    boundary(std::ptr::null_mut(), || {
        out_arg(text_out, "text_out")?;
        string_out(text_out, lb(balancer)?.prometheus());
        Ok(())
    })
}

/// Writes a provider's circuit as JSON to `json_out` (keys `state`, `failures`,
/// `successes`, `consecutive_failures`, `last_failure`, `next_attempt` in ms since the
/// Unix epoch or null, and more); free it with `sy_string_free`. An unknown provider is
/// `SY_ERR_INVALID_ARGUMENT`.
#[no_mangle]
pub extern "C" fn sy_circuit_json(
    balancer: *mut sy_balancer,
    provider: *const c_char,
    json_out: *mut *mut c_char,
) -> sy_status {
    boundary(std::ptr::null_mut(), || {
        out_arg(json_out, "json_out")?;
        // SAFETY: NULL or a NUL-terminated string, per the header.
        let provider = unsafe { str_arg(provider, "provider") }?;
        let info = lb(balancer)?.circuit(provider)?;
        let json = serde_json::to_string(&info).map_err(|e| Error::Internal(e.to_string()))?;
        string_out(json_out, json);
        Ok(())
    })
}

/// Starts the status server on `addr` (e.g. "127.0.0.1:0" for a free port) and writes
/// its URL, "http://127.0.0.1:PORT/", to `url_out`; free it with `sy_string_free`. The
/// server runs on its own threads and stops with the balancer. Non-loopback addresses are
/// refused unless the configuration sets `dashboard.allow_remote`. A library built
/// without its `dashboard` feature answers `SY_ERR_INVALID_ARGUMENT`.
#[no_mangle]
pub extern "C" fn sy_serve_dashboard(
    balancer: *mut sy_balancer,
    addr: *const c_char,
    url_out: *mut *mut c_char,
    error_out: *mut *mut sy_error,
) -> sy_status {
    boundary(error_out, || {
        out_arg(url_out, "url_out")?;
        // SAFETY: NULL or a NUL-terminated string, per the header.
        let addr = unsafe { str_arg(addr, "addr") }?;
        let lb = lb(balancer)?;
        #[cfg(feature = "dashboard")]
        {
            string_out(url_out, lb.serve_dashboard(addr)?.url());
            Ok(())
        }
        #[cfg(not(feature = "dashboard"))]
        {
            let _ = (lb, addr);
            Err(Error::InvalidArgument(
                "this library was built without its dashboard feature".into(),
            ))
        }
    })
}

fn operate(
    balancer: *mut sy_balancer,
    provider: *const c_char,
    error_out: *mut *mut sy_error,
    act: fn(&Balancer, &str) -> Result<(), Error>,
) -> sy_status {
    boundary(error_out, || {
        // SAFETY: NULL or a NUL-terminated string, per the header.
        let provider = unsafe { str_arg(provider, "provider") }?;
        act(lb(balancer)?, provider)
    })
}

/// Opens a provider's circuit until `sy_force_close` or `sy_reset_circuit`.
#[no_mangle]
pub extern "C" fn sy_force_open(
    balancer: *mut sy_balancer,
    provider: *const c_char,
    error_out: *mut *mut sy_error,
) -> sy_status {
    operate(balancer, provider, error_out, Balancer::force_open)
}

/// Closes a provider's circuit now; it opens again by the usual rules.
#[no_mangle]
pub extern "C" fn sy_force_close(
    balancer: *mut sy_balancer,
    provider: *const c_char,
    error_out: *mut *mut sy_error,
) -> sy_status {
    operate(balancer, provider, error_out, Balancer::force_close)
}

/// Closes a provider's circuit and forgets its counts.
#[no_mangle]
pub extern "C" fn sy_reset_circuit(
    balancer: *mut sy_balancer,
    provider: *const c_char,
    error_out: *mut *mut sy_error,
) -> sy_status {
    operate(balancer, provider, error_out, Balancer::reset_circuit)
}

/// Switches a service's strategy: "round_robin", "least_connections",
/// "weighted_response", "health_based", "peak_ewma" or "cost_aware" (which needs a
/// `cost_per_request` on at least one provider of the service).
#[no_mangle]
pub extern "C" fn sy_set_strategy(
    balancer: *mut sy_balancer,
    service: *const c_char,
    strategy: *const c_char,
    error_out: *mut *mut sy_error,
) -> sy_status {
    boundary(error_out, || {
        // SAFETY: NULL or NUL-terminated strings, per the header.
        let (service, strategy) =
            unsafe { (str_arg(service, "service")?, str_arg(strategy, "strategy")?) };
        let kind: StrategyKind = serde_json::from_value(serde_json::Value::String(strategy.into()))
            .map_err(|_| {
                Error::InvalidArgument(format!("`strategy` \"{strategy}\" is not a known strategy"))
            })?;
        lb(balancer)?.set_strategy(service, kind)
    })
}

/// Calls `callback` with `user_data` and each event as JSON from now on (see
/// `sy_event_callback`): every attempt's end, failover, circuit change, rest and quota
/// notice, one at a time, in order, on the events thread, with no lock held. Events wait
/// in a bounded buffer: a callback slower than the traffic loses the excess (counted in
/// the metrics' `events.dropped`) and never slows a request. The callback and
/// `user_data` must stay valid until `sy_balancer_shutdown` or `sy_balancer_free`
/// returns; none comes after.
#[no_mangle]
pub extern "C" fn sy_on_event(
    balancer: *mut sy_balancer,
    callback: sy_event_callback,
    user_data: *mut c_void,
) -> sy_status {
    boundary(std::ptr::null_mut(), || {
        let lb = lb(balancer)?;
        let callback =
            callback.ok_or_else(|| Error::InvalidArgument("`callback` is NULL".into()))?;
        let user_data = UserData(user_data);
        lb.on_event(move |e| {
            let user_data = user_data;
            let json = serde_json::to_string(e).unwrap_or_default();
            let json = CString::new(json).unwrap_or_default();
            // SAFETY: the caller's function pointer and user_data, as registered; the
            // string outlives the call.
            unsafe { callback(user_data.0, json.as_ptr()) };
        });
        Ok(())
    })
}

/// Calls `callback` with `user_data` on every circuit state change from now on (see
/// `sy_circuit_callback`). The callback and `user_data` must stay valid until
/// `sy_balancer_shutdown` or `sy_balancer_free` returns; neither returns while a call is
/// in progress, and none comes after.
#[no_mangle]
pub extern "C" fn sy_on_circuit_change(
    balancer: *mut sy_balancer,
    callback: sy_circuit_callback,
    user_data: *mut c_void,
) -> sy_status {
    boundary(std::ptr::null_mut(), || {
        let lb = lb(balancer)?;
        let callback =
            callback.ok_or_else(|| Error::InvalidArgument("`callback` is NULL".into()))?;
        let user_data = UserData(user_data);
        lb.on_circuit_change(move |e| {
            let user_data = user_data;
            let texts = [
                e.service.as_str(),
                e.provider.as_str(),
                e.from.name(),
                e.to.name(),
            ]
            .map(|t| CString::new(t).unwrap_or_default());
            // SAFETY: the caller's function pointer and user_data, as registered; the
            // strings outlive the call.
            unsafe {
                callback(
                    user_data.0,
                    texts[0].as_ptr(),
                    texts[1].as_ptr(),
                    texts[2].as_ptr(),
                    texts[3].as_ptr(),
                )
            };
        });
        Ok(())
    })
}
