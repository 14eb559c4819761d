// switchyard from C++: load a configuration, call, handle errors as exceptions.
//
//   c++ -std=c++17 -Iinclude -Ibindings/cpp examples/cpp/demo.cpp -o demo_cpp
//       -Ltarget/release -lswitchyard -Wl,-rpath,target/release
//   ./demo_cpp switchyard.toml
#include <atomic>
#include <chrono>
#include <iostream>
#include <thread>

#include "switchyard.hpp"

int main(int argc, char **argv) {
    if (argc < 2) {
        std::cerr << "usage: " << argv[0] << " CONFIG\n";
        return 2;
    }
    try {
        auto lb = switchyard::Balancer::from_file(argv[1]);
        int answered = 0;
        for (int i = 0; i < 10; i++) {
            auto req = switchyard::Request("s", "quote").param("symbol", "AAPL").priority(switchyard::Priority::High);
            auto resp = lb.call(req);
            std::cout << resp.status() << " from " << resp.provider() << ": " << resp.body() << "\n";
            answered += resp.status() == 200;
        }
        try {
            lb.call(switchyard::Request("dead", "quote").timeout(std::chrono::seconds(5)));
        } catch (const switchyard::Error &e) {
            if (e.code() == SY_ERR_ALL_PROVIDERS_FAILED) {
                std::size_t attempts = 0;
                for (std::size_t at = 0; (at = e.attempts_json().find("\"provider\"", at)) != std::string::npos; at++) {
                    attempts++;
                }
                std::cout << "all providers failed: " << attempts << " attempts\n";
            }
        }
        std::atomic<int> done{0};
        lb.submit(switchyard::Request("s", "quote"), [&done](auto response, auto error) {
            done = response && !error ? 1 : -1;
        });
        for (int i = 0; i < 500 && done == 0; i++) std::this_thread::sleep_for(std::chrono::milliseconds(10));
        std::cout << "callback: " << (done == 1 ? "ok" : "failed") << "\n";
        std::cout << "answered " << answered << " of 10\n";
        lb.shutdown(std::chrono::seconds(1));
    } catch (const switchyard::Error &e) {
        std::cerr << "error " << e.code() << ": " << e.what() << "\n";
        return 1;
    }
    return 0;
}
