// The C++ wrapper under closed-loop load, for benches/languages.rs; the same arguments and
// output as c_clients.c:
//
//     cpp_clients CLIENT THREADS SECONDS MAX_REQUESTS CONFIG URL[,URL...]
//
// CLIENT is cpp_call (Balancer::call) or cpp_submit (Balancer::submit, a future per request).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <future>
#include <string>
#include <sys/resource.h>
#include <thread>
#include <vector>

#include "switchyard.hpp"

namespace {

using Clock = std::chrono::steady_clock;

double cpu_seconds() {
    rusage u{};
    getrusage(RUSAGE_SELF, &u);
    return double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + double(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

double quantile_us(const std::vector<std::uint64_t> &v, double q) {
    if (v.empty()) return 0.0;
    auto i = std::clamp<std::size_t>(std::size_t(q * double(v.size()) + 0.999999), 1, v.size());
    return double(v[i - 1]) / 1000.0;
}

struct Tally {
    std::vector<std::uint64_t> lat;
    long ok = 0, errors = 0;
};

}  // namespace

int main(int argc, char **argv) {
    if (argc != 7) {
        std::fprintf(stderr, "usage: %s CLIENT THREADS SECONDS MAX_REQUESTS CONFIG URL[,URL...]\n", argv[0]);
        return 2;
    }
    const std::string client = argv[1];
    const int threads = std::max(1, std::atoi(argv[2]));
    const auto seconds = std::chrono::duration<double>(std::atof(argv[3]));
    const long budget = std::atol(argv[4]) / threads;
    const bool submit = client == "cpp_submit";
    auto lb = switchyard::Balancer::from_file(argv[5]);
    std::atomic<unsigned long> turn{0};
    std::vector<Tally> tallies(threads);
    std::vector<std::thread> pool;
    const double cpu0 = cpu_seconds();
    const auto t0 = Clock::now();
    const auto deadline = t0 + std::chrono::duration_cast<Clock::duration>(seconds);
    for (int i = 0; i < threads; i++) {
        pool.emplace_back([&, i] {
            Tally &t = tallies[i];
            t.lat.reserve(1 << 16);
            while (t.ok + t.errors < budget && Clock::now() < deadline) {
                const auto start = Clock::now();
                bool good = false;
                try {
                    // A request of its own each time: identical ones in flight at once would share calls.
                    auto req = switchyard::Request("bench", "/").param("n", std::to_string(turn++));
                    if (submit) {
                        std::promise<bool> done;
                        auto answer = done.get_future();
                        lb.submit(req, [&done](std::optional<switchyard::Response> r, std::optional<switchyard::Error>) {
                            done.set_value(r && r->status() == 200);
                        });
                        good = answer.get();
                    } else {
                        good = lb.call(req).status() == 200;
                    }
                } catch (const switchyard::Error &) {
                    good = false;
                }
                t.lat.push_back(std::uint64_t(std::chrono::nanoseconds(Clock::now() - start).count()));
                (good ? t.ok : t.errors)++;
            }
        });
    }
    for (auto &th : pool) th.join();
    const double elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
    const double cpu = cpu_seconds() - cpu0;
    std::vector<std::uint64_t> all;
    long ok = 0, errors = 0;
    for (auto &t : tallies) {
        all.insert(all.end(), t.lat.begin(), t.lat.end());
        ok += t.ok;
        errors += t.errors;
    }
    std::sort(all.begin(), all.end());
    std::printf("{\"requests\": %ld, \"errors\": %ld, \"elapsed_s\": %.6f, \"cpu_s\": %.6f, \"p50_us\": %.1f, "
                "\"p99_us\": %.1f, \"p999_us\": %.1f}\n",
                ok, errors, elapsed, cpu, quantile_us(all, 0.5), quantile_us(all, 0.99), quantile_us(all, 0.999));
    return 0;
}
