/* switchyard from C: load a configuration, make calls, print the metrics.
 *
 *   cc -std=c11 -Wall -Wextra -Iinclude examples/c/demo.c -Ltarget/release -lswitchyard \
 *      -Wl,-rpath,target/release -o demo
 *   ./demo switchyard.toml SERVICE ENDPOINT [N]
 */
#include <stdio.h>
#include <stdlib.h>

#include "switchyard.h"

static int report(const char *what, sy_status status, sy_error *error) {
    fprintf(stderr, "%s failed (%u): %s\n", what, status, sy_error_message(error));
    sy_error_free(error);
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s CONFIG SERVICE ENDPOINT [N]\n", argv[0]);
        return 2;
    }
    int n = argc > 4 ? atoi(argv[4]) : 10;
    printf("switchyard %s\n", sy_version());

    sy_balancer *lb = NULL;
    sy_error *error = NULL;
    sy_status status = sy_balancer_from_file(argv[1], &lb, &error);
    if (status != SY_OK) {
        return report("loading the configuration", status, error);
    }

    sy_request *req = sy_request_new(argv[2], argv[3]);
    if (req == NULL) {
        fprintf(stderr, "bad service or endpoint\n");
        sy_balancer_free(lb);
        return 2;
    }
    sy_request_set_priority(req, SY_PRIORITY_HIGH);
    sy_request_set_timeout_ms(req, 5000);

    int ok = 0;
    for (int i = 0; i < n; i++) {
        sy_response *resp = NULL;
        status = sy_call(lb, req, &resp, &error);
        if (status != SY_OK) {
            fprintf(stderr, "call %d: %s\n", i, sy_error_message(error));
            fprintf(stderr, "  attempts: %s\n", sy_error_attempts_json(error));
            sy_error_free(error);
            error = NULL;
            continue;
        }
        size_t len = 0;
        const uint8_t *body = sy_response_body(resp, &len);
        printf("call %d: %u from %s after %u attempt(s), %zu bytes: %.*s\n", i,
               (unsigned)sy_response_status(resp), sy_response_provider(resp),
               (unsigned)sy_response_attempts(resp), len, (int)len, (const char *)body);
        ok++;
        sy_response_free(resp);
    }
    sy_request_free(req);

    char *json = NULL;
    if (sy_metrics_json(lb, &json) == SY_OK) {
        printf("metrics: %s\n", json);
        sy_string_free(json);
    }
    sy_balancer_shutdown(lb, 1000);
    sy_balancer_free(lb);
    printf("%d of %d calls answered\n", ok, n);
    return ok == n ? 0 : 1;
}
