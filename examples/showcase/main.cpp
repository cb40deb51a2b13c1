// examples/showcase/main.cpp: runs every registered scene (see scene.hpp), in order.
//
//   showcase            run all scenes
//   showcase --quick    smaller runs (what the test suite does)
//   showcase --list     list the scenes and exit
//   showcase --only N   run only scene N (repeatable)
//
// Exit status: 0 when every scene returned 0 or skipped, 1 when any failed, 2 on a usage error.
// A skipped scene prints `--- NAME skipped: why` and `RTDEFER-SKIPPED: showcase/NAME: why`.
#include "scene.hpp"

#include <chrono>
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

namespace {

void usage(std::FILE* out) {
    std::fprintf(out,
                 "usage: showcase [--quick] [--list] [--only NAME]...\n"
                 "  --quick      smaller runs, same tables (a smoke test)\n"
                 "  --list       list the scenes in the order they run\n"
                 "  --only NAME  run only the named scene (may be repeated)\n");
}

} // namespace

int main(int argc, char** argv) {
    scene_args args;
    bool list = false;
    std::vector<std::string> only;
    for (int i = 1; i < argc; ++i) {
        if (std::strcmp(argv[i], "--quick") == 0) {
            args.quick = true;
        } else if (std::strcmp(argv[i], "--list") == 0) {
            list = true;
        } else if (std::strcmp(argv[i], "--only") == 0 && i + 1 < argc) {
            only.emplace_back(argv[++i]);
        } else if (std::strncmp(argv[i], "--only=", 7) == 0) {
            only.emplace_back(argv[i] + 7);
        } else if (std::strcmp(argv[i], "--help") == 0 || std::strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else {
            std::fprintf(stderr, "showcase: unknown argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }

    const std::vector<showcase::scene> all = showcase::sorted_scenes();
    if (all.empty()) {
        std::printf("rtdefer showcase: no scenes are registered yet (each primitive adds "
                    "examples/showcase/<concept>_scene.cpp).\n");
        return only.empty() ? 0 : 2;
    }
    if (list) {
        for (const auto& s : all) std::printf("%4d  %s\n", s.order, s.name.c_str());
        return 0;
    }

    std::vector<showcase::scene> selected;
    for (const std::string& name : only) {
        bool found = false;
        for (const auto& s : all) {
            if (s.name == name) {
                selected.push_back(s);
                found = true;
            }
        }
        if (!found) {
            std::fprintf(stderr, "showcase: no scene named '%s' (try --list)\n", name.c_str());
            return 2;
        }
    }
    if (only.empty()) selected = all;

    std::printf("rtdefer showcase: %zu scene(s)%s\n", selected.size(), args.quick ? " (quick)" : "");
    std::vector<std::string> failed, skipped;
    std::size_t index = 0;
    for (const auto& s : selected) {
        ++index;
        std::printf("\n=== [%zu/%zu] %s ===\n", index, selected.size(), s.name.c_str());
        std::fflush(stdout);
        const auto start = std::chrono::steady_clock::now();
        int rc = 0;
        showcase::skip_reason().clear();
        try {
            rc = s.fn(args);
        } catch (const std::exception& e) {
            std::printf("scene %s threw: %s\n", s.name.c_str(), e.what());
            rc = 1;
        } catch (...) {
            std::printf("scene %s threw an unknown exception\n", s.name.c_str());
            rc = 1;
        }
        const double secs =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        if (rc == showcase::scene_skipped) {
            const std::string why = showcase::skip_reason().empty() ? "no reason given" : showcase::skip_reason();
            std::printf("--- %s skipped: %s (%.1f s)\n", s.name.c_str(), why.c_str(), secs);
            std::printf("RTDEFER-SKIPPED: showcase/%s: %s\n", s.name.c_str(), why.c_str());
            skipped.push_back(s.name);
        } else if (rc != 0) {
            std::printf("--- %s FAILED (returned %d, %.1f s)\n", s.name.c_str(), rc, secs);
            failed.push_back(s.name);
        } else {
            std::printf("--- %s ok (%.1f s)\n", s.name.c_str(), secs);
        }
        std::fflush(stdout);
    }

    std::printf("\nshowcase: %zu scene(s), %zu ok, %zu skipped", selected.size(),
                selected.size() - failed.size() - skipped.size(), skipped.size());
    for (std::size_t i = 0; i < skipped.size(); ++i)
        std::printf("%s%s", i == 0 ? " (" : ", ", skipped[i].c_str());
    std::printf("%s, %zu failed", skipped.empty() ? "" : ")", failed.size());
    for (std::size_t i = 0; i < failed.size(); ++i)
        std::printf("%s%s", i == 0 ? ": " : ", ", failed[i].c_str());
    std::printf("\n");
    return failed.empty() ? 0 : 1;
}
