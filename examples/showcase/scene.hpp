// examples/showcase/scene.hpp: the showcase's scene registry.
//
// A scene is one primitive shown side by side with its baseline. Each lives in
// examples/showcase/<concept>_scene.cpp and registers itself at static-initialisation time:
//
//     #include "scene.hpp"
//     static int run(const scene_args& args) {
//         const int rounds = args.quick ? 1'000 : 100'000;
//         ...print a table: primitive vs baseline...
//         return 0;            // non-zero: the scene failed (a correctness check did not hold)
//     }
//     RTDEFER_SCENE("task_work", 30, run);
//
// A scene that cannot run here (no SCHED_FIFO, one CPU) returns `showcase::skip("why")`: it prints
// `skipped: why`, and main reports the scene as skipped (never as ok) with an
// `RTDEFER-SKIPPED: showcase/<name>: why` line, which scripts/test counts as a skip.
//
// main.cpp runs the scenes in ascending `order` (ties by name). Keep a scene under ~5 s, and
// under ~1 s with args.quick (the test suite runs `showcase --quick`).
#pragma once

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

/// What main passes to every scene.
struct scene_args {
    bool quick = false; // --quick: smaller runs (smoke test), same output shape
};

namespace showcase {

using scene_fn = int (*)(const scene_args&);

struct scene {
    std::string name;
    int order;
    scene_fn fn;
};

/// What a scene returns after skip(): not a failure, not ok. Any other non-zero value is a failure.
inline constexpr int scene_skipped = -77;

/// The reason given by the last skip() (main reads it when a scene returns scene_skipped).
inline std::string& skip_reason() {
    static std::string why;
    return why;
}

/// Effects: prints `  skipped: <why>` and records the reason. Returns: scene_skipped (return it).
[[nodiscard]] inline int skip(const std::string& why) {
    std::printf("  skipped: %s\n\n", why.c_str());
    skip_reason() = why;
    return scene_skipped;
}

/// All registered scenes, in registration order (unspecified across files; main sorts them).
inline std::vector<scene>& registry() {
    static std::vector<scene> scenes; // function-local: safe from static-initialisation order
    return scenes;
}

inline bool register_scene(const char* name, int order, scene_fn fn) {
    registry().push_back(scene{name, order, fn});
    return true;
}

/// The scenes sorted by (order, name).
inline std::vector<scene> sorted_scenes() {
    std::vector<scene> s = registry();
    std::stable_sort(s.begin(), s.end(), [](const scene& a, const scene& b) {
        return a.order != b.order ? a.order < b.order : a.name < b.name;
    });
    return s;
}

} // namespace showcase

#define RTDEFER_SCENE_CAT2(a, b) a##b
#define RTDEFER_SCENE_CAT(a, b) RTDEFER_SCENE_CAT2(a, b)

/// RTDEFER_SCENE("name", order, fn): register fn (`int(const scene_args&)`, or a captureless
/// lambda) as a scene. Use at namespace scope, once per scene.
#define RTDEFER_SCENE(name, order, ...)                                                            \
    [[maybe_unused]] static const bool RTDEFER_SCENE_CAT(rtdefer_scene_registered_, __LINE__) =   \
        ::showcase::register_scene((name), (order), (__VA_ARGS__))
