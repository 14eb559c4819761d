// switchyard for C++17: a header-only RAII wrapper over include/switchyard.h.
//
// Handles live in std::unique_ptr with the matching _free as deleter; failures throw
// switchyard::Error, which carries the sy_status code and, for AllProvidersFailed, the
// attempts as JSON. A Balancer may be shared by many threads; Request and Response are
// values owned by one thread at a time.
#ifndef SWITCHYARD_HPP
#define SWITCHYARD_HPP

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "switchyard.h"

namespace switchyard {

// What a status means, in a sentence ("success" for SY_OK). Never empty.
inline std::string_view status_message(sy_status code) noexcept { return sy_status_message(code); }

// A failed call: what() is the message (never empty), code() the SY_ERR_* kind.
class Error : public std::runtime_error {
public:
    Error(sy_status code, std::string message, std::string attempts_json = "[]",
          std::string waits_json = "[]")
        : std::runtime_error(message.empty() ? std::string(sy_status_message(code)) : std::move(message)),
          code_(code),
          attempts_json_(std::move(attempts_json)),
          waits_json_(std::move(waits_json)) {}

    sy_status code() const noexcept { return code_; }
    // Each failed attempt: provider, kind, status, elapsed_ms, message.
    const std::string &attempts_json() const noexcept { return attempts_json_; }
    // For SY_ERR_QUOTA_EXHAUSTED, each provider held back: provider, reason, frees_in_ms.
    const std::string &waits_json() const noexcept { return waits_json_; }

private:
    sy_status code_;
    std::string attempts_json_;
    std::string waits_json_;
};

namespace detail {
struct FreeRequest { void operator()(sy_request *p) const noexcept { sy_request_free(p); } };
struct FreeResponse { void operator()(sy_response *p) const noexcept { sy_response_free(p); } };
struct FreeError { void operator()(sy_error *p) const noexcept { sy_error_free(p); } };
struct FreeString { void operator()(char *p) const noexcept { sy_string_free(p); } };

// Without details (a call that takes no sy_error), the message is the status's own.
inline Error to_error(sy_status code, sy_error *raw) {
    std::unique_ptr<sy_error, FreeError> e(raw);
    if (!e) return Error(code, sy_status_message(code));
    return Error(code, sy_error_message(e.get()), sy_error_attempts_json(e.get()),
                 sy_error_waits_json(e.get()));
}

// Takes ownership of `raw`. Evaluate the C call before passing its error here: argument
// order is unspecified, and `raw` must be read after the call wrote it.
inline void check(sy_status code, sy_error *raw = nullptr) {
    if (code != SY_OK) throw to_error(code, raw);
}

// The native balancer, counted while in use: close() (and the destructor) waits for every
// call under way on other threads, so none touches a freed balancer.
class Handle {
public:
    explicit Handle(sy_balancer *raw) : raw_(raw) {}
    Handle(const Handle &) = delete;
    Handle &operator=(const Handle &) = delete;
    ~Handle() { close(); }

    // One use: throws SY_ERR_SHUTTING_DOWN once the balancer is closed.
    class Use {
    public:
        explicit Use(Handle &h) : h_(h) {
            std::lock_guard<std::mutex> lock(h_.m_);
            if (h_.raw_ == nullptr || h_.closing_) throw Error(SY_ERR_SHUTTING_DOWN, "the balancer is closed");
            h_.in_use_++;
        }
        Use(const Use &) = delete;
        Use &operator=(const Use &) = delete;
        ~Use() {
            std::lock_guard<std::mutex> lock(h_.m_);
            if (--h_.in_use_ == 0) h_.idle_.notify_all();
        }
        sy_balancer *get() const noexcept { return h_.raw_; }

    private:
        Handle &h_;
    };

    void close() noexcept {
        sy_balancer *raw = nullptr;
        {
            std::unique_lock<std::mutex> lock(m_);
            if (raw_ == nullptr || closing_) return;
            closing_ = true;
            if (in_use_ > 0) {
                // Calls under way end soon with SY_ERR_SHUTTING_DOWN.
                sy_balancer_shutdown(raw_, 0);
                idle_.wait(lock, [this] { return in_use_ == 0; });
            }
            raw = raw_;
            raw_ = nullptr;
        }
        sy_balancer_free(raw);
    }

private:
    std::mutex m_;
    std::condition_variable idle_;
    sy_balancer *raw_;
    std::size_t in_use_ = 0;
    bool closing_ = false;
};

inline std::string take(char *raw) {
    std::unique_ptr<char, FreeString> s(raw);
    return s ? std::string(s.get()) : std::string();
}
}  // namespace detail

enum class Priority : sy_priority {
    Critical = SY_PRIORITY_CRITICAL,
    High = SY_PRIORITY_HIGH,
    Normal = SY_PRIORITY_NORMAL,
    Low = SY_PRIORITY_LOW,
};

// A provider's answer. Views it returns live as long as the Response.
class Response {
public:
    explicit Response(sy_response *raw) : p_(raw) {}

    std::uint16_t status() const noexcept { return sy_response_status(p_.get()); }
    std::string_view body() const noexcept {
        std::size_t len = 0;
        const std::uint8_t *data = sy_response_body(p_.get(), &len);
        return {reinterpret_cast<const char *>(data), len};
    }
    // The provider's own body when the endpoint's shape made body() from it, else body().
    std::string_view raw_body() const noexcept {
        std::size_t len = 0;
        const std::uint8_t *data = sy_response_raw_body(p_.get(), &len);
        return {reinterpret_cast<const char *>(data), len};
    }
    // Whether the answer came from the endpoint's cache (cache_ttl_ms).
    bool from_cache() const noexcept { return sy_response_from_cache(p_.get()); }
    std::string_view provider() const noexcept { return sy_response_provider(p_.get()); }
    std::uint32_t attempts() const noexcept { return sy_response_attempts(p_.get()); }
    std::chrono::microseconds latency() const noexcept {
        return std::chrono::microseconds(sy_response_latency_us(p_.get()));
    }
    std::chrono::microseconds queue_wait() const noexcept {
        return std::chrono::microseconds(sy_response_queue_wait_us(p_.get()));
    }
    // Every header as "name: value\n" lines.
    std::string_view headers_text() const noexcept {
        const char *text = sy_response_headers(p_.get());
        return text ? std::string_view(text) : std::string_view();
    }
    // Everything at once, in one call across the C boundary.
    sy_response_view view() const {
        sy_response_view v{};
        detail::check(sy_response_view_of(p_.get(), &v));
        return v;
    }
    std::optional<std::string_view> header(const std::string &name) const noexcept {
        const char *v = sy_response_header(p_.get(), name.c_str());
        if (v == nullptr) return std::nullopt;
        return std::string_view(v);
    }
    std::vector<std::pair<std::string_view, std::string_view>> headers() const {
        std::vector<std::pair<std::string_view, std::string_view>> out;
        for (std::size_t i = 0, n = sy_response_header_count(p_.get()); i < n; i++) {
            out.emplace_back(sy_response_header_name(p_.get(), i), sy_response_header_value(p_.get(), i));
        }
        return out;
    }

private:
    std::unique_ptr<sy_response, detail::FreeResponse> p_;
};

// A request to a service's endpoint, built with chained calls.
class Request {
public:
    Request(const std::string &service, const std::string &endpoint)
        : p_(sy_request_new(service.c_str(), endpoint.c_str())) {
        if (!p_) throw Error(SY_ERR_INVALID_ARGUMENT, "service and endpoint must be non-empty UTF-8");
    }

    // Each setter works on a named request (returns Request&) and on a temporary
    // (returns Request&&), so `auto r = Request("s", "e").param("a", "b");` moves.
    Request &method(const std::string &m) & { detail::check(sy_request_set_method(p_.get(), m.c_str())); return *this; }
    Request &param(const std::string &name, const std::string &value) & {
        detail::check(sy_request_add_param(p_.get(), name.c_str(), value.c_str()));
        return *this;
    }
    Request &header(const std::string &name, const std::string &value) & {
        detail::check(sy_request_add_header(p_.get(), name.c_str(), value.c_str()));
        return *this;
    }
    Request &body(std::string_view bytes) & {
        detail::check(sy_request_set_body(p_.get(), reinterpret_cast<const std::uint8_t *>(bytes.data()), bytes.size()));
        return *this;
    }
    Request &priority(Priority p) & {
        detail::check(sy_request_set_priority(p_.get(), static_cast<sy_priority>(p)));
        return *this;
    }
    Request &timeout(std::chrono::milliseconds t) & {
        detail::check(sy_request_set_timeout_ms(p_.get(), static_cast<std::uint64_t>(t.count())));
        return *this;
    }
    Request &idempotent(bool yes) & { detail::check(sy_request_set_idempotent(p_.get(), yes)); return *this; }

    Request &&method(const std::string &m) && { return std::move(method(m)); }
    Request &&param(const std::string &n, const std::string &v) && { return std::move(param(n, v)); }
    Request &&header(const std::string &n, const std::string &v) && { return std::move(header(n, v)); }
    Request &&body(std::string_view bytes) && { return std::move(body(bytes)); }
    Request &&priority(Priority p) && { return std::move(priority(p)); }
    Request &&timeout(std::chrono::milliseconds t) && { return std::move(timeout(t)); }
    Request &&idempotent(bool yes) && { return std::move(idempotent(yes)); }

    const sy_request *get() const noexcept { return p_.get(); }

private:
    std::unique_ptr<sy_request, detail::FreeRequest> p_;
};

// The balancer. Thread-safe; movable, not copyable. close() or the destructor frees it
// once calls under way on other threads have returned; later calls throw
// SY_ERR_SHUTTING_DOWN.
class Balancer {
public:
    static Balancer from_file(const std::string &path) {
        sy_balancer *raw = nullptr;
        sy_error *e = nullptr;
        const sy_status code = sy_balancer_from_file(path.c_str(), &raw, &e);
        detail::check(code, e);
        return Balancer(raw);
    }

    // `format` is "toml", "json" or empty to detect it.
    static Balancer from_string(const std::string &text, const std::string &format = "") {
        sy_balancer *raw = nullptr;
        sy_error *e = nullptr;
        const sy_status code = sy_balancer_from_str(text.c_str(), format.empty() ? nullptr : format.c_str(), &raw, &e);
        detail::check(code, e);
        return Balancer(raw);
    }

    Response call(const Request &req) const {
        detail::Handle::Use use(*h_);
        sy_response *raw = nullptr;
        sy_error *e = nullptr;
        const sy_status code = sy_call(use.get(), req.get(), &raw, &e);
        detail::check(code, e);
        return Response(raw);
    }

    // A plain GET in one native call (sy_call_get): `params` as {name, value} pairs.
    Response get(const std::string &service, const std::string &endpoint,
                 std::initializer_list<std::pair<std::string_view, std::string_view>> params = {}) const {
        std::string packed;
        for (const auto &[name, value] : params) {
            if (name.find('\0') != std::string_view::npos || value.find('\0') != std::string_view::npos)
                throw Error(SY_ERR_INVALID_ARGUMENT, "a parameter name or value contains a NUL byte");
            packed.append(name).push_back('\0');
            packed.append(value).push_back('\0');
        }
        detail::Handle::Use use(*h_);
        sy_response *raw = nullptr;
        sy_error *e = nullptr;
        const sy_status code = sy_call_get(use.get(), service.c_str(), endpoint.c_str(),
                                           reinterpret_cast<const std::uint8_t *>(packed.data()), packed.size(), &raw,
                                           nullptr, &e);
        detail::check(code, e);
        return Response(raw);
    }

    // Queues the request; `done` runs exactly once on a worker thread, with a Response or
    // an Error. It must not throw.
    void submit(const Request &req, std::function<void(std::optional<Response>, std::optional<Error>)> done) const {
        detail::Handle::Use use(*h_);
        auto *boxed = new std::function<void(std::optional<Response>, std::optional<Error>)>(std::move(done));
        sy_error *e = nullptr;
        sy_status code = sy_submit(use.get(), req.get(), &Balancer::trampoline, boxed, &e);
        if (code != SY_OK) {
            delete boxed;
            throw detail::to_error(code, e);
        }
    }

    // The decision for a request, without sending it: JSON with `pick`, `why` and every
    // candidate's tier, circuit, rest, rate and quota left, score and `skipped` reason.
    std::string explain_json(const Request &req) const {
        detail::Handle::Use use(*h_);
        char *out = nullptr;
        sy_error *e = nullptr;
        const sy_status code = sy_explain_json(use.get(), req.get(), &out, &e);
        detail::check(code, e);
        return detail::take(out);
    }

    std::string metrics_json() const {
        detail::Handle::Use use(*h_);
        char *out = nullptr;
        detail::check(sy_metrics_json(use.get(), &out));
        return detail::take(out);
    }
    std::string prometheus() const {
        detail::Handle::Use use(*h_);
        char *out = nullptr;
        detail::check(sy_prometheus(use.get(), &out));
        return detail::take(out);
    }
    std::string circuit_json(const std::string &provider) const {
        detail::Handle::Use use(*h_);
        char *out = nullptr;
        detail::check(sy_circuit_json(use.get(), provider.c_str(), &out));
        return detail::take(out);
    }
    void force_open(const std::string &provider) const {
        detail::Handle::Use use(*h_);
        sy_error *e = nullptr;
        const sy_status code = sy_force_open(use.get(), provider.c_str(), &e);
        detail::check(code, e);
    }
    void force_close(const std::string &provider) const {
        detail::Handle::Use use(*h_);
        sy_error *e = nullptr;
        const sy_status code = sy_force_close(use.get(), provider.c_str(), &e);
        detail::check(code, e);
    }
    void reset_circuit(const std::string &provider) const {
        detail::Handle::Use use(*h_);
        sy_error *e = nullptr;
        const sy_status code = sy_reset_circuit(use.get(), provider.c_str(), &e);
        detail::check(code, e);
    }
    // "round_robin", "least_connections", "weighted_response", "health_based", "peak_ewma",
    // "cost_aware" (needs a cost_per_request on at least one provider of the service).
    void set_strategy(const std::string &service, const std::string &strategy) const {
        detail::Handle::Use use(*h_);
        sy_error *e = nullptr;
        const sy_status code = sy_set_strategy(use.get(), service.c_str(), strategy.c_str(), &e);
        detail::check(code, e);
    }
    // Starts the status server; returns its URL.
    std::string serve_dashboard(const std::string &addr = "127.0.0.1:0") const {
        detail::Handle::Use use(*h_);
        char *url = nullptr;
        sy_error *e = nullptr;
        const sy_status code = sy_serve_dashboard(use.get(), addr.c_str(), &url, &e);
        detail::check(code, e);
        return detail::take(url);
    }
    // A circuit changed: service, provider, state left, state entered.
    struct CircuitEvent {
        std::string service, provider, from, to;
    };
    // Calls `listener` on the balancer's events thread for every circuit change, one at a
    // time. It may call the balancer; it must not throw. It lives as long as the balancer.
    void on_circuit_change(std::function<void(const CircuitEvent &)> listener) {
        detail::Handle::Use use(*h_);
        listeners_.push_back(std::make_unique<std::function<void(const CircuitEvent &)>>(std::move(listener)));
        detail::check(sy_on_circuit_change(use.get(), &Balancer::circuit_trampoline, listeners_.back().get()));
    }
    // `subscriber` gets every event (attempt, failover, circuit, rest, quota) as one JSON
    // object, one at a time on the events thread; a slow one loses events, never time.
    void on_event(std::function<void(std::string_view json)> subscriber) {
        detail::Handle::Use use(*h_);
        subscribers_.push_back(std::make_unique<std::function<void(std::string_view)>>(std::move(subscriber)));
        detail::check(sy_on_event(use.get(), &Balancer::event_trampoline, subscribers_.back().get()));
    }
    // Shuts down with no grace and frees the native balancer, after the calls under way on
    // other threads return. Calling it again is harmless.
    void close() noexcept {
        if (h_) h_->close();
    }

    void shutdown(std::chrono::milliseconds grace) const {
        detail::Handle::Use use(*h_);
        detail::check(sy_balancer_shutdown(use.get(), static_cast<std::uint64_t>(grace.count())));
    }

private:
    explicit Balancer(sy_balancer *raw) : h_(std::make_unique<detail::Handle>(raw)) {}

    static void circuit_trampoline(void *user_data, const char *service, const char *provider, const char *from,
                                   const char *to) {
        try {
            (*static_cast<std::function<void(const CircuitEvent &)> *>(user_data))(
                CircuitEvent{service, provider, from, to});
        } catch (...) {
            // An exception must not cross into C.
        }
    }

    static void event_trampoline(void *user_data, const char *json) {
        try {
            (*static_cast<std::function<void(std::string_view)> *>(user_data))(json);
        } catch (...) {
            // An exception must not cross into C.
        }
    }

    static void trampoline(void *user_data, sy_response *response, sy_error *error) {
        std::unique_ptr<std::function<void(std::optional<Response>, std::optional<Error>)>> done(
            static_cast<std::function<void(std::optional<Response>, std::optional<Error>)> *>(user_data));
        if (response != nullptr) {
            (*done)(Response(response), std::nullopt);
        } else {
            (*done)(std::nullopt, detail::to_error(sy_error_code(error), error));
        }
    }

    // Declared before h_ so the balancer (and its events thread) goes first.
    std::list<std::unique_ptr<std::function<void(const CircuitEvent &)>>> listeners_;
    std::list<std::unique_ptr<std::function<void(std::string_view)>>> subscribers_;
    std::unique_ptr<detail::Handle> h_;
};

inline std::string_view version() noexcept { return sy_version(); }

}  // namespace switchyard

#endif  // SWITCHYARD_HPP
