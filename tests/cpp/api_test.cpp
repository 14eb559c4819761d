// The C++ wrapper's whole surface against the shared scenario (tests/c_api.rs starts the
// servers and writes the configuration): every call, every error path it adds.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "switchyard.hpp"

static int passed = 0, failed = 0;

#define CHECK(cond, what)                                          \
    do {                                                           \
        if (cond) {                                                \
            passed++;                                              \
        } else {                                                   \
            failed++;                                              \
            std::printf("FAILED %s (line %d)\n", what, __LINE__);  \
        }                                                          \
    } while (0)

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    using namespace switchyard;
    CHECK(status_message(SY_OK) == "success", "status_message(SY_OK)");
    CHECK(!status_message(SY_ERR_TIMEOUT).empty(), "status_message(timeout)");
    CHECK(!status_message(4242).empty(), "status_message(unknown)");
    CHECK(!version().empty(), "version");

    auto lb = Balancer::from_file(argv[1]);
    std::atomic<int> attempts_heard{0};
    lb.on_event([&](std::string_view json) {
        if (json.find("\"type\":\"attempt\"") != std::string_view::npos) attempts_heard++;
    });
    std::atomic<int> opened{0};
    lb.on_circuit_change([&](const Balancer::CircuitEvent &e) {
        if (e.provider == "good1" && e.from == "closed" && e.to == "open") opened++;
        // A listener may call the balancer.
        (void)lb.metrics_json();
    });

    auto r = lb.call(Request("s", "quote").param("symbol", "X"));
    CHECK(r.status() == 200, "call");
    CHECK(r.queue_wait().count() >= 0, "queue_wait");
    CHECK(r.headers_text().find(':') != std::string_view::npos, "headers_text");
    const sy_response_view v = r.view();
    CHECK(v.status == 200 && v.attempts >= 1 && std::string(v.provider) == std::string(r.provider()), "view");
    CHECK(v.raw_body == v.body && v.raw_body_len == v.body_len && !v.from_cache, "view: raw body, cache");
    CHECK(r.raw_body() == r.body() && !r.from_cache(), "raw_body, from_cache");
    auto g = lb.get("s", "quote", {{"symbol", "Y"}});
    CHECK(g.status() == 200 && g.body() == r.body(), "get in one call");
    bool refused = false;
    try {
        (void)lb.get("s", "quote", {{"symbol", std::string_view("a\0b", 3)}});
    } catch (const Error &e) {
        refused = e.code() == SY_ERR_INVALID_ARGUMENT;
    }
    CHECK(refused, "get refuses a NUL in a parameter");

    CHECK(lb.explain_json(Request("s", "quote")).find("\"pick\"") != std::string::npos, "explain_json");
    lb.force_open("good1");
    for (int i = 0; i < 200 && opened.load() == 0; i++) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    CHECK(opened.load() == 1, "listener heard the forced open");
    CHECK(attempts_heard.load() >= 1, "on_event heard the attempt");
    CHECK(lb.circuit_json("good1").find("\"open\"") != std::string::npos, "circuit_json");
    lb.reset_circuit("good1");
    CHECK(lb.circuit_json("good1").find("\"closed\"") != std::string::npos, "reset_circuit");
    lb.set_strategy("s", "least_connections");
    CHECK(lb.metrics_json().find("least_connections") != std::string::npos, "set_strategy");

    try {
        lb.set_strategy("s", "fastest");
        CHECK(false, "unknown strategy refused");
    } catch (const Error &e) {
        CHECK(e.code() == SY_ERR_INVALID_ARGUMENT && std::strlen(e.what()) > 0, "unknown strategy named");
    }
    try {
        // A call whose C function has no error out-parameter: the message is the status's.
        Request("s", "quote").priority(static_cast<Priority>(9));
        CHECK(false, "bad priority refused");
    } catch (const Error &e) {
        CHECK(e.code() == SY_ERR_INVALID_ARGUMENT && std::strlen(e.what()) > 0, "what() is never empty");
    }
    try {
        lb.reset_circuit("nobody");
        CHECK(false, "unknown provider refused");
    } catch (const Error &e) {
        CHECK(std::string(e.what()).find("nobody") != std::string::npos, "unknown provider named");
    }
    const std::string url = lb.serve_dashboard("127.0.0.1:0");
    CHECK(url.rfind("http://127.0.0.1:", 0) == 0, "serve_dashboard");
    lb.shutdown(std::chrono::milliseconds(500));

    // close() while eight threads call: each call answers or says the balancer is closed.
    auto shared = Balancer::from_file(argv[1]);
    std::atomic<int> odd{0}, closed{0};
    std::vector<std::thread> callers;
    for (int t = 0; t < 8; t++) {
        callers.emplace_back([&] {
            for (int i = 0; i < 2000; i++) {
                try {
                    (void)shared.call(Request("s", "quote"));
                } catch (const Error &e) {
                    if (e.code() == SY_ERR_SHUTTING_DOWN) {
                        closed++;
                        return;
                    }
                    odd++;
                }
            }
        });
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    shared.close();
    for (auto &c : callers) c.join();
    CHECK(odd.load() == 0, "calls during close() only answer or say closed");
    CHECK(closed.load() > 0, "calls after close() say closed");
    shared.close();

    std::printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
