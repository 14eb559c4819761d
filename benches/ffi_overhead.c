/* Per-call cost of the C API: N sy_call()s to one upstream, median and mean in us.
 * Built and run by benches/ffi_overhead.sh next to the same loop in Rust and Python. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "switchyard.h"

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    int n = atoi(argv[2]);
    sy_balancer *lb = NULL;
    if (sy_balancer_from_file(argv[1], &lb, NULL) != SY_OK) return 1;
    sy_request *req = sy_request_new("bench", "/");
    double *us = malloc(sizeof(double) * (size_t)n), sum = 0;
    for (int i = 0; i < n; i++) {
        struct timespec a, b;
        sy_response *resp = NULL;
        clock_gettime(CLOCK_MONOTONIC, &a);
        sy_status s = sy_call(lb, req, &resp, NULL);
        size_t len = 0;
        sy_response_body(resp, &len);
        sy_response_free(resp);
        clock_gettime(CLOCK_MONOTONIC, &b);
        if (s != SY_OK) return 1;
        us[i] = (b.tv_sec - a.tv_sec) * 1e6 + (b.tv_nsec - a.tv_nsec) / 1e3;
        sum += us[i];
    }
    qsort(us, (size_t)n, sizeof(double), cmp);
    printf("c median %.1f us, mean %.1f us\n", us[n / 2], sum / n);
    free(us);
    sy_request_free(req);
    sy_balancer_free(lb);
    return 0;
}
