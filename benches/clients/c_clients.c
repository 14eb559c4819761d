/* One C HTTP client under closed-loop load, for benches/languages.rs.
 *
 *     c_clients CLIENT THREADS SECONDS MAX_REQUESTS CONFIG URL[,URL...]
 *
 * CLIENT is sy_call, sy_submit (a callback that wakes the submitting thread), curl_easy
 * (an easy handle per thread, which keeps its connections) or curl_multi (one thread
 * driving THREADS transfers at once through a multi handle). libcurl takes the URLs in
 * turn; switchyard takes its providers from CONFIG. Prints one JSON line: requests, errors,
 * elapsed_s, cpu_s (this process) and p50/p99/p999 latency in us. */
#define _GNU_SOURCE
#include <curl/curl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "switchyard.h"

enum { MAX_URLS = 8 };

static const char *client;
static int threads;
static double seconds;
static long budget;
static sy_balancer *lb;
static char *urls[MAX_URLS];
static int url_count;
static atomic_ulong turn;
static uint64_t deadline_ns;

typedef struct {
    uint64_t *lat;
    size_t len, cap;
    long ok, errors;
} Tally;

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static void record(Tally *t, uint64_t ns, int good) {
    if (t->len == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 1 << 16;
        t->lat = realloc(t->lat, t->cap * sizeof *t->lat);
        if (!t->lat) abort();
    }
    t->lat[t->len++] = ns;
    if (good) t->ok++; else t->errors++;
}

static int more(const Tally *t) { return t->ok + t->errors < budget && now_ns() < deadline_ns; }

static size_t discard(char *data, size_t size, size_t n, void *user) {
    (void)data;
    (void)user;
    return size * n;
}

/* A request of its own each time: identical ones in flight at once would share calls. */
static sy_request *next_request(void) {
    char n[24];
    snprintf(n, sizeof n, "%lu", atomic_fetch_add(&turn, 1));
    sy_request *req = sy_request_new("bench", "/");
    if (!req || sy_request_add_param(req, "n", n) != SY_OK) abort();
    return req;
}

static int call_once(void) {
    sy_request *req = next_request();
    sy_response *res = NULL;
    sy_error *err = NULL;
    int good = sy_call(lb, req, &res, &err) == SY_OK && sy_response_status(res) == 200;
    sy_request_free(req);
    sy_response_free(res);
    sy_error_free(err);
    return good;
}

typedef struct {
    pthread_mutex_t m;
    pthread_cond_t c;
    int done, good;
} Waiter;

static void on_done(void *user, sy_response *res, sy_error *err) {
    Waiter *w = user;
    int good = res && sy_response_status(res) == 200;
    sy_response_free(res);
    sy_error_free(err);
    pthread_mutex_lock(&w->m);
    w->done = 1;
    w->good = good;
    pthread_cond_signal(&w->c);
    pthread_mutex_unlock(&w->m);
}

static int submit_once(Waiter *w) {
    sy_request *req = next_request();
    sy_error *err = NULL;
    w->done = 0;
    sy_status code = sy_submit(lb, req, on_done, w, &err);
    sy_request_free(req);
    if (code != SY_OK) {
        sy_error_free(err);
        return 0;
    }
    pthread_mutex_lock(&w->m);
    while (!w->done) pthread_cond_wait(&w->c, &w->m);
    pthread_mutex_unlock(&w->m);
    return w->good;
}

static void *worker(void *arg) {
    Tally *t = arg;
    CURL *easy = NULL;
    Waiter w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0};
    if (strcmp(client, "curl_easy") == 0) {
        easy = curl_easy_init();
        curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, discard);
        curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    }
    while (more(t)) {
        uint64_t start = now_ns();
        int good;
        if (easy) {
            long status = 0;
            curl_easy_setopt(easy, CURLOPT_URL, urls[atomic_fetch_add(&turn, 1) % url_count]);
            good = curl_easy_perform(easy) == CURLE_OK &&
                   curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status) == CURLE_OK && status == 200;
        } else if (strcmp(client, "sy_submit") == 0) {
            good = submit_once(&w);
        } else {
            good = call_once();
        }
        record(t, now_ns() - start, good);
    }
    if (easy) curl_easy_cleanup(easy);
    return NULL;
}

/* THREADS transfers in flight at once on this one thread, each restarted as it ends. */
static void multi(Tally *t) {
    CURLM *m = curl_multi_init();
    curl_multi_setopt(m, CURLMOPT_MAX_HOST_CONNECTIONS, (long)threads);
    CURL **handles = calloc((size_t)threads, sizeof *handles);
    uint64_t *started = calloc((size_t)threads, sizeof *started);
    if (!handles || !started) abort();
    for (int i = 0; i < threads; i++) {
        handles[i] = curl_easy_init();
        curl_easy_setopt(handles[i], CURLOPT_WRITEFUNCTION, discard);
        curl_easy_setopt(handles[i], CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(handles[i], CURLOPT_PRIVATE, (void *)(intptr_t)i);
        curl_easy_setopt(handles[i], CURLOPT_URL, urls[atomic_fetch_add(&turn, 1) % url_count]);
        started[i] = now_ns();
        curl_multi_add_handle(m, handles[i]);
    }
    int running = threads;
    while (running > 0) {
        curl_multi_perform(m, &running);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(m, &left))) {
            if (msg->msg != CURLMSG_DONE) continue;
            CURL *e = msg->easy_handle;
            void *priv = NULL;
            long status = 0;
            curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&priv);
            curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
            int i = (int)(intptr_t)priv;
            record(t, now_ns() - started[i], msg->data.result == CURLE_OK && status == 200);
            curl_multi_remove_handle(m, e);
            if (more(t)) {
                curl_easy_setopt(e, CURLOPT_URL, urls[atomic_fetch_add(&turn, 1) % url_count]);
                started[i] = now_ns();
                curl_multi_add_handle(m, e);
                running++;
            }
        }
        if (running > 0) curl_multi_poll(m, NULL, 0, 100, NULL);
    }
    for (int i = 0; i < threads; i++) curl_easy_cleanup(handles[i]);
    free(handles);
    free(started);
    curl_multi_cleanup(m);
}

static int by_value(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static double quantile_us(const uint64_t *v, size_t n, double q) {
    if (n == 0) return 0.0;
    size_t i = (size_t)(q * (double)n + 0.999999);
    if (i < 1) i = 1;
    if (i > n) i = n;
    return (double)v[i - 1] / 1000.0;
}

static double cpu_seconds(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return (double)(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + (double)(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

int main(int argc, char **argv) {
    if (argc != 7) {
        fprintf(stderr, "usage: %s CLIENT THREADS SECONDS MAX_REQUESTS CONFIG URL[,URL...]\n", argv[0]);
        return 2;
    }
    client = argv[1];
    threads = atoi(argv[2]);
    seconds = atof(argv[3]);
    budget = atol(argv[4]) / (threads > 0 ? threads : 1);
    for (char *u = strtok(argv[6], ","); u && url_count < MAX_URLS; u = strtok(NULL, ",")) urls[url_count++] = u;
    int is_curl = strncmp(client, "curl_", 5) == 0;
    if (is_curl) {
        curl_global_init(CURL_GLOBAL_DEFAULT);
    } else {
        sy_error *err = NULL;
        if (sy_balancer_from_file(argv[5], &lb, &err) != SY_OK) {
            fprintf(stderr, "%s\n", sy_error_message(err));
            return 1;
        }
    }
    int one_thread = strcmp(client, "curl_multi") == 0;
    int n = one_thread ? 1 : threads;
    if (one_thread) budget = atol(argv[4]);
    Tally *tallies = calloc((size_t)n, sizeof *tallies);
    pthread_t *pool = calloc((size_t)n, sizeof *pool);
    if (!tallies || !pool) abort();
    double cpu0 = cpu_seconds();
    uint64_t t0 = now_ns();
    deadline_ns = t0 + (uint64_t)(seconds * 1e9);
    if (one_thread) {
        multi(&tallies[0]);
    } else {
        for (int i = 0; i < n; i++) pthread_create(&pool[i], NULL, worker, &tallies[i]);
        for (int i = 0; i < n; i++) pthread_join(pool[i], NULL);
    }
    double elapsed = (double)(now_ns() - t0) / 1e9;
    double cpu = cpu_seconds() - cpu0;
    size_t total = 0;
    long ok = 0, errors = 0;
    for (int i = 0; i < n; i++) total += tallies[i].len;
    uint64_t *all = malloc((total ? total : 1) * sizeof *all);
    if (!all) abort();
    size_t at = 0;
    for (int i = 0; i < n; i++) {
        if (tallies[i].len) memcpy(all + at, tallies[i].lat, tallies[i].len * sizeof *all);
        at += tallies[i].len;
        ok += tallies[i].ok;
        errors += tallies[i].errors;
        free(tallies[i].lat);
    }
    qsort(all, total, sizeof *all, by_value);
    printf("{\"requests\": %ld, \"errors\": %ld, \"elapsed_s\": %.6f, \"cpu_s\": %.6f, \"p50_us\": %.1f, "
           "\"p99_us\": %.1f, \"p999_us\": %.1f}\n",
           ok, errors, elapsed, cpu, quantile_us(all, total, 0.5), quantile_us(all, total, 0.99),
           quantile_us(all, total, 0.999));
    free(all);
    free(tallies);
    free(pool);
    if (lb) sy_balancer_free(lb);
    if (is_curl) curl_global_cleanup();
    return 0;
}
