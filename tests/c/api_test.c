/* The C API: every error path, bad input at every entry point, one balancer shared by
 * eight threads, callbacks. Run by tests/c_api.rs with a configuration whose services
 * point at local test servers:
 *   s:    good1 (tier 1), bad (tier 1, answers 503), good2 (tier 2)
 *   dead: gone (answers 503)
 *   slow: hang (never answers)
 */
#define _DEFAULT_SOURCE /* usleep */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "switchyard.h"

static int passed, failed;

#define CHECK(cond, ...)                                                      \
    do {                                                                      \
        if (cond) {                                                           \
            passed++;                                                         \
        } else {                                                              \
            failed++;                                                         \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);   \
            fprintf(stderr, __VA_ARGS__);                                     \
            fprintf(stderr, "\n");                                            \
        }                                                                     \
    } while (0)

/* Expects `status` with an error whose message contains `needle`; frees the error. */
static void expect(const char *what, sy_status got, sy_status want, sy_error *error, const char *needle) {
    CHECK(got == want, "%s: status %u, want %u (%s)", what, got, want, sy_error_message(error));
    if (needle != NULL && error != NULL) {
        CHECK(strstr(sy_error_message(error), needle) != NULL, "%s: message \"%s\" lacks \"%s\"", what,
              sy_error_message(error), needle);
    }
    if (got != SY_OK && error != NULL) {
        CHECK(sy_error_code(error) == got, "%s: sy_error_code %u", what, sy_error_code(error));
    }
    sy_error_free(error);
}

static sy_status call(sy_balancer *lb, const char *service, const char *endpoint, unsigned timeout_ms,
                      sy_response **resp, sy_error **error) {
    sy_request *req = sy_request_new(service, endpoint);
    if (timeout_ms) sy_request_set_timeout_ms(req, timeout_ms);
    sy_status s = sy_call(lb, req, resp, error);
    sy_request_free(req);
    return s;
}

static void on_done_never(void *user_data, sy_response *response, sy_error *error) {
    (void)user_data;
    sy_response_free(response);
    sy_error_free(error);
    CHECK(0, "a refused submit called back");
}

static void bad_input(sy_balancer *lb) {
    sy_request *req = sy_request_new("s", "quote");
    sy_error *e = NULL;
    sy_balancer *nope = NULL;
    sy_response *resp = NULL;
    char *json = NULL;

    /* Each call must be refused as an invalid argument whose message names `needle`. */
#define BAD(what, expr, needle)                                                                   \
    do {                                                                                          \
        sy_status got_ = (expr);                                                                  \
        CHECK(got_ == SY_ERR_INVALID_ARGUMENT, "%s: status %u", what, got_);                      \
        if (e != NULL) {                                                                          \
            CHECK((needle) == NULL || strstr(sy_error_message(e), (needle) ? (needle) : "") != NULL, \
                  "%s: message \"%s\"", what, sy_error_message(e));                              \
            sy_error_free(e);                                                                     \
            e = NULL;                                                                             \
        }                                                                                         \
    } while (0)
    const char *none = NULL;
    BAD("from_file NULL path", sy_balancer_from_file(NULL, &nope, &e), "path");
    BAD("from_file NULL out", sy_balancer_from_file("x.toml", NULL, &e), "balancer_out");
    BAD("from_str NULL text", sy_balancer_from_str(NULL, NULL, &nope, &e), "text");
    BAD("from_str bad format", sy_balancer_from_str("", "yaml", &nope, &e), "format");
    BAD("from_str not UTF-8", sy_balancer_from_str("\xff\xfe", "toml", &nope, &e), "UTF-8");
    BAD("call NULL balancer", sy_call(NULL, req, &resp, &e), "balancer");
    BAD("call NULL request", sy_call(lb, NULL, &resp, &e), "req");
    BAD("call NULL out", sy_call(lb, req, NULL, &e), "response_out");
    BAD("call_get no final NUL", sy_call_get(lb, "s", "quote", (const uint8_t *)"symbol", 6, &resp, NULL, &e), "NUL");
    BAD("call_get name alone", sy_call_get(lb, "s", "quote", (const uint8_t *)"symbol\0", 7, &resp, NULL, &e), "without a value");
    BAD("call_get empty service", sy_call_get(lb, "", "quote", NULL, 0, &resp, NULL, &e), "non-empty");
    BAD("call_get NULL out", sy_call_get(lb, "s", "quote", NULL, 0, NULL, NULL, &e), "response_out");
    BAD("submit NULL callback", sy_submit(lb, req, NULL, NULL, &e), "callback");
    BAD("submit NULL request", sy_submit(lb, NULL, on_done_never, NULL, &e), "req");
    BAD("method NULL request", sy_request_set_method(NULL, "GET"), none);
    BAD("method NULL", sy_request_set_method(req, NULL), none);
    BAD("method unknown", sy_request_set_method(req, "FETCH"), none);
    BAD("param NULL name", sy_request_add_param(req, NULL, "v"), none);
    BAD("param NULL value", sy_request_add_param(req, "n", NULL), none);
    BAD("header bad name", sy_request_add_header(req, "bad name", "v"), none);
    BAD("header line break", sy_request_add_header(req, "X-A", "a\r\nb"), none);
    BAD("body NULL with length", sy_request_set_body(req, NULL, 5), none);
    BAD("body absurd length", sy_request_set_body(req, (const uint8_t *)"x", (size_t)-1), none);
    BAD("priority out of range", sy_request_set_priority(req, 7), none);
    BAD("timeout zero", sy_request_set_timeout_ms(req, 0), none);
    BAD("timeout absurd", sy_request_set_timeout_ms(req, UINT64_MAX), none);
    BAD("idempotent NULL", sy_request_set_idempotent(NULL, true), none);
    BAD("metrics NULL out", sy_metrics_json(lb, NULL), none);
    BAD("metrics NULL balancer", sy_metrics_json(NULL, &json), none);
    BAD("prometheus NULL out", sy_prometheus(lb, NULL), none);
    BAD("circuit NULL provider", sy_circuit_json(lb, NULL, &json), none);
    BAD("circuit unknown provider", sy_circuit_json(lb, "nope", &json), none);
    BAD("force_open unknown", sy_force_open(lb, "nope", &e), "nope");
    BAD("force_close NULL", sy_force_close(lb, NULL, &e), "provider");
    BAD("set_strategy unknown", sy_set_strategy(lb, "s", "fastest", &e), "fastest");
    BAD("shutdown NULL", sy_balancer_shutdown(NULL, 0), none);
    BAD("listener NULL", sy_on_circuit_change(lb, NULL, NULL), none);
    BAD("subscriber NULL", sy_on_event(lb, NULL, NULL), none);
#undef BAD
    CHECK(nope == NULL && resp == NULL && json == NULL, "out-params written on failure");
    CHECK(sy_request_new(NULL, "e") == NULL, "request with NULL service");
    CHECK(sy_request_new("s", "\xff") == NULL, "request with bad UTF-8");
    CHECK(sy_request_new("", "e") == NULL, "request with empty service");
    CHECK(strcmp(sy_error_message(NULL), "") == 0, "message of NULL");
    CHECK(sy_response_status(NULL) == 0 && sy_response_header(NULL, "x") == NULL, "response accessors of NULL");
    sy_error_free(NULL);
    sy_response_free(NULL);
    sy_request_free(NULL);
    sy_string_free(NULL);
    sy_balancer_free(NULL);
    sy_request_free(req);
}

static void error_kinds(sy_balancer *lb) {
    sy_response *resp = NULL;
    sy_error *e = NULL;
    sy_status s = call(lb, "bonds", "quote", 0, &resp, &e);
    expect("unknown service", s, SY_ERR_UNKNOWN_SERVICE, e, "bonds");
    e = NULL;
    s = call(lb, "s", "dividends", 0, &resp, &e);
    expect("unknown endpoint", s, SY_ERR_UNKNOWN_ENDPOINT, e, "dividends");
    e = NULL;
    s = call(lb, "dead", "quote", 0, &resp, &e);
    CHECK(s == SY_ERR_ALL_PROVIDERS_FAILED, "dead service: %u", s);
    CHECK(strstr(sy_error_attempts_json(e), "\"kind\":\"status\"") != NULL, "attempts: %s", sy_error_attempts_json(e));
    CHECK(strstr(sy_error_attempts_json(e), "\"status\":503") != NULL, "attempts: %s", sy_error_attempts_json(e));
    sy_error_free(e);
    e = NULL;
    s = call(lb, "capped", "quote", 0, &resp, &e);
    CHECK(s == SY_OK && resp != NULL, "the quota's one call: %u", s);
    sy_response_free(resp);
    resp = NULL;
    s = call(lb, "capped", "quote", 0, &resp, &e);
    CHECK(s == SY_ERR_QUOTA_EXHAUSTED, "over the quota: %u", s);
    CHECK(strstr(sy_error_message(e), "free quota used up, frees up in") != NULL, "message: %s", sy_error_message(e));
    CHECK(strstr(sy_error_waits_json(e), "\"provider\":\"free\"") != NULL
              && strstr(sy_error_waits_json(e), "\"reason\":\"quota\"") != NULL,
          "waits: %s", sy_error_waits_json(e));
    CHECK(strcmp(sy_error_waits_json(NULL), "[]") == 0, "waits of NULL");
    sy_error_free(e);
    e = NULL;
    s = call(lb, "slow", "quote", 300, &resp, &e);
    expect("hanging provider", s, SY_ERR_TIMEOUT, e, "deadline");
    e = NULL;
    sy_balancer *bad = NULL;
    s = sy_balancer_from_str("[defaults]\nstrategy = \"fastest\"\n", "toml", &bad, &e);
    expect("bad config", s, SY_ERR_CONFIG, e, "defaults.strategy");
    CHECK(bad == NULL, "no balancer on a refused config");
    CHECK(resp == NULL, "no response on failure");
}

static void answers(sy_balancer *lb) {
    sy_response *resp = NULL;
    sy_error *e = NULL;
    sy_request *req = sy_request_new("s", "quote");
    sy_request_add_param(req, "symbol", "AAPL");
    sy_request_add_header(req, "X-Trace", "c");
    for (int i = 0; i < 20; i++) {
        sy_status s = sy_call(lb, req, &resp, &e);
        CHECK(s == SY_OK, "call %d: %s", i, sy_error_message(e));
        if (s != SY_OK) {
            sy_error_free(e);
            e = NULL;
            continue;
        }
        size_t len = 0;
        const uint8_t *body = sy_response_body(resp, &len);
        CHECK(sy_response_status(resp) == 200 && len > 0 && body != NULL, "status %u", sy_response_status(resp));
        size_t raw_len = 0;
        const uint8_t *raw = sy_response_raw_body(resp, &raw_len);
        CHECK(raw == body && raw_len == len, "no shape: the raw body is the body");
        CHECK(!sy_response_from_cache(resp) && !sy_response_from_cache(NULL), "no cache here");
        CHECK(sy_response_raw_body(NULL, &raw_len) == NULL && raw_len == 0, "raw body of NULL");
        CHECK(strcmp(sy_response_provider(resp), "bad") != 0, "served by %s", sy_response_provider(resp));
        CHECK(sy_response_header(resp, "Content-Type") != NULL, "content-type header");
        CHECK(sy_response_header_count(resp) >= 2, "header count");
        CHECK(strstr(sy_response_headers(resp), "content-type: application/json\n") != NULL, "headers: %s",
              sy_response_headers(resp));
        CHECK(sy_response_header_name(resp, 0) != NULL && sy_response_header_name(resp, 999) == NULL, "header names");
        sy_response_free(resp);
        resp = NULL;
    }
    sy_request_free(req);

    /* The same GET in one native call, with the view filled at once. */
    sy_response_view view;
    memset(&view, 0, sizeof view);
    sy_status got = sy_call_get(lb, "s", "quote", (const uint8_t *)"symbol\0X\0", 9, &resp, &view, &e);
    CHECK(got == SY_OK, "call_get: %s", sy_error_message(e));
    if (got == SY_OK) {
        CHECK(view.status == 200 && view.body_len > 0 && strcmp(view.provider, sy_response_provider(resp)) == 0,
              "call_get view: status %u", view.status);
        sy_response_free(resp);
        resp = NULL;
    } else {
        sy_error_free(e);
        e = NULL;
    }
}

struct shared {
    sy_balancer *lb;
    atomic_int ok;
};

static void *caller(void *arg) {
    struct shared *sh = arg;
    for (int i = 0; i < 50; i++) {
        sy_response *resp = NULL;
        if (call(sh->lb, "s", "quote", 0, &resp, NULL) == SY_OK && sy_response_status(resp) == 200) {
            atomic_fetch_add(&sh->ok, 1);
        }
        sy_response_free(resp);
    }
    return NULL;
}

static void eight_threads(sy_balancer *lb) {
    struct shared sh = {lb, 0};
    pthread_t threads[8];
    for (int i = 0; i < 8; i++) pthread_create(&threads[i], NULL, caller, &sh);
    for (int i = 0; i < 8; i++) pthread_join(threads[i], NULL);
    CHECK(atomic_load(&sh.ok) == 400, "%d of 400 answered across 8 threads", atomic_load(&sh.ok));
}

static atomic_int callbacks, callback_errors;

static void on_done(void *user_data, sy_response *response, sy_error *error) {
    CHECK(user_data == (void *)&callbacks, "user_data passed through");
    CHECK((response == NULL) != (error == NULL), "exactly one of response and error");
    if (error != NULL) atomic_fetch_add(&callback_errors, 1);
    sy_response_free(response);
    sy_error_free(error);
    atomic_fetch_add(&callbacks, 1);
}

static void submits(sy_balancer *lb) {
    sy_request *req = sy_request_new("s", "quote");
    int submitted = 0;
    for (int i = 0; i < 100; i++) {
        if (sy_submit(lb, req, on_done, &callbacks, NULL) == SY_OK) submitted++;
    }
    sy_request *dead = sy_request_new("dead", "quote");
    if (sy_submit(lb, dead, on_done, &callbacks, NULL) == SY_OK) submitted++;
    sy_request_free(req);
    sy_request_free(dead);
    for (int i = 0; i < 1000 && atomic_load(&callbacks) < submitted; i++) usleep(10000);
    CHECK(submitted == 101 && atomic_load(&callbacks) == 101, "%d callbacks for %d submits",
          atomic_load(&callbacks), submitted);
    CHECK(atomic_load(&callback_errors) == 1, "%d errors by callback", atomic_load(&callback_errors));
}

static atomic_int transitions;

static void on_circuit(void *user_data, const char *service, const char *provider, const char *from, const char *to) {
    (void)user_data;
    if (strcmp(service, "s") == 0 && strcmp(provider, "good1") == 0 && strcmp(from, "closed") == 0 &&
        strcmp(to, "open") == 0) {
        atomic_fetch_add(&transitions, 1);
    }
}

static atomic_int circuit_events;
static atomic_int attempt_events;

static void on_event(void *user_data, const char *json) {
    (void)user_data;
    if (strstr(json, "\"type\":\"attempt\"") != NULL && strstr(json, "\"service\":\"s\"") != NULL) {
        atomic_fetch_add(&attempt_events, 1);
    }
    if (strstr(json, "\"type\":\"circuit\"") != NULL && strstr(json, "\"provider\":\"good1\"") != NULL &&
        strstr(json, "\"to\":\"open\"") != NULL) {
        atomic_fetch_add(&circuit_events, 1);
    }
}

static void circuits(sy_balancer *lb) {
    CHECK(sy_on_circuit_change(lb, on_circuit, NULL) == SY_OK, "listener registered");
    CHECK(sy_on_event(lb, on_event, NULL) == SY_OK, "subscriber registered");
    CHECK(sy_force_open(lb, "good1", NULL) == SY_OK, "force open");
    /* Listeners are called on the balancer's events thread, soon after the change. */
    for (int i = 0; i < 200 && atomic_load(&transitions) < 1; i++) usleep(10000);
    CHECK(atomic_load(&transitions) == 1, "listener called %d times", atomic_load(&transitions));
    for (int i = 0; i < 200 && atomic_load(&circuit_events) < 1; i++) usleep(10000);
    CHECK(atomic_load(&circuit_events) == 1, "circuit event heard %d times", atomic_load(&circuit_events));
    sy_response *resp = NULL;
    CHECK(call(lb, "s", "quote", 0, &resp, NULL) == SY_OK, "a call after subscribing");
    sy_response_free(resp);
    for (int i = 0; i < 200 && atomic_load(&attempt_events) < 1; i++) usleep(10000);
    CHECK(atomic_load(&attempt_events) >= 1, "attempt events heard: %d", atomic_load(&attempt_events));
    char *json = NULL;
    CHECK(sy_circuit_json(lb, "good1", &json) == SY_OK && strstr(json, "\"state\":\"open\"") != NULL, "circuit %s",
          json ? json : "(null)");
    sy_string_free(json);
    CHECK(sy_reset_circuit(lb, "good1", NULL) == SY_OK, "reset");
    char *text = NULL;
    CHECK(sy_prometheus(lb, &text) == SY_OK && strstr(text, "switchyard_requests_total") != NULL, "prometheus");
    sy_string_free(text);
    CHECK(sy_set_strategy(lb, "s", "round_robin", NULL) == SY_OK, "strategy switch");
}

static void shutdown_refuses(sy_balancer *lb) {
    CHECK(sy_balancer_shutdown(lb, 1000) == SY_OK, "shutdown");
    sy_response *resp = NULL;
    sy_error *e = NULL;
    sy_status s = call(lb, "s", "quote", 0, &resp, &e);
    expect("after shutdown", s, SY_ERR_SHUTTING_DOWN, e, "shutting down");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s CONFIG\n", argv[0]);
        return 2;
    }
    sy_balancer *lb = NULL;
    sy_error *e = NULL;
    sy_status s = sy_balancer_from_file(argv[1], &lb, &e);
    if (s != SY_OK) {
        fprintf(stderr, "config: %s\n", sy_error_message(e));
        sy_error_free(e);
        return 1;
    }
    bad_input(lb);
    error_kinds(lb);
    answers(lb);
    eight_threads(lb);
    submits(lb);
    circuits(lb);
    shutdown_refuses(lb);
    sy_balancer_free(lb);
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
