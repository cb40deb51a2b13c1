// tests/main.cpp: the doctest main linked into every unit and stress test executable.
//
// A listener records the running test case's name (for the SKIP lines of test_util.hpp) and, at
// the end of the run, lists the test cases that skipped, one machine-readable line each:
//
//   RTDEFER-SKIPPED: <test case>: <reason>
//
// (doctest itself counts a skipped case as passed; scripts/test counts these lines as skips). A
// case that skipped more than once (in subcases) is listed once, with its first reason. If every
// test case that ran skipped, the executable exits 77, which meson reports as SKIP.
//
// Death tests fork, make the child trip an RTDEFER_ASSERT, and check that it died by SIGABRT. The
// child inherits doctest's crash handler, which would catch the signal, report a "crash" from the
// child and allocate inside the handler (ThreadSanitizer reports that and, with halt_on_error,
// exits 66 instead). So forked children get the default disposition of those signals back.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include "test_util.hpp"

#include <pthread.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <mutex>
#include <string>
#include <vector>

namespace {

struct run_state {
    std::mutex lock;
    std::string current = "(no test case)";
    std::vector<std::string> skipped_cases; // names, in order, each once
    std::vector<std::string> reasons;       // the first reason of each, same index
    int cases_started = 0;
};

run_state& state() {
    static run_state s;
    return s;
}

struct skip_listener : doctest::IReporter {
    explicit skip_listener(const doctest::ContextOptions&) {}

    void test_case_start(const doctest::TestCaseData& tc) override {
        std::lock_guard<std::mutex> g(state().lock);
        state().current = tc.m_name;
        ++state().cases_started;
    }
    void test_run_end(const doctest::TestRunStats&) override {
        std::lock_guard<std::mutex> g(state().lock);
        if (state().skipped_cases.empty()) return;
        std::printf("\n%zu test case(s) skipped (doctest counts them as passed):\n", state().skipped_cases.size());
        for (std::size_t i = 0; i < state().skipped_cases.size(); ++i)
            std::printf("RTDEFER-SKIPPED: %s: %s\n", state().skipped_cases[i].c_str(), state().reasons[i].c_str());
        std::fflush(stdout);
    }

    void report_query(const doctest::QueryData&) override {}
    void test_run_start() override {}
    void test_case_reenter(const doctest::TestCaseData&) override {}
    void test_case_end(const doctest::CurrentTestCaseStats&) override {}
    void test_case_exception(const doctest::TestCaseException&) override {}
    void subcase_start(const doctest::SubcaseSignature&) override {}
    void subcase_end() override {}
    void log_assert(const doctest::AssertData&) override {}
    void log_message(const doctest::MessageData&) override {}
    void test_case_skipped(const doctest::TestCaseData&) override {}
};

// pthread_atfork child handler: only sigaction calls, which are async-signal-safe.
void restore_fatal_signals_in_child() {
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    for (int sig : {SIGABRT, SIGSEGV, SIGFPE, SIGILL, SIGBUS, SIGTERM, SIGINT})
        sigaction(sig, &dfl, nullptr);
}

} // namespace

REGISTER_LISTENER("rtdefer_skip_listener", 1, skip_listener);

namespace rtdefer_test {

const char* current_test_name() noexcept {
    // Written only by the listener between test cases, on the main thread.
    return state().current.c_str();
}

void note_skip(const std::string& reason) {
    std::lock_guard<std::mutex> g(state().lock);
    run_state& st = state();
    if (std::find(st.skipped_cases.begin(), st.skipped_cases.end(), st.current) != st.skipped_cases.end())
        return;
    st.skipped_cases.push_back(st.current);
    st.reasons.push_back(reason);
}

} // namespace rtdefer_test

int main(int argc, char** argv) {
    pthread_atfork(nullptr, nullptr, &restore_fatal_signals_in_child);
    doctest::Context context;
    context.applyCommandLine(argc, argv);
    const int result = context.run();
    if (context.shouldExit()) return result;

    std::lock_guard<std::mutex> g(state().lock);
    if (result == 0 && state().cases_started > 0 &&
        static_cast<int>(state().skipped_cases.size()) >= state().cases_started) {
        std::printf("every test case skipped: exit 77 (meson SKIP)\n");
        return 77;
    }
    return result;
}
