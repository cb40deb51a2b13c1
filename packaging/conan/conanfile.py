# Conan 2 recipe for rtdefer, a header-only C++20 library (Linux: futex, pthreads, SCHED_FIFO).
#
#   conan create packaging/conan -s compiler.cppstd=20 [-o "rtdefer/*:with_uring=True"]
#
# The sources are the repository this file lives in (exported by export_sources); the version is
# read from meson.build, the one place it is written. The package holds the headers and the
# license only: consumers get rtdefer::rtdefer (CMakeDeps) or rtdefer.pc (PkgConfigDeps) from
# package_info(), which mirrors the CMake package and pkg-config modules `meson install` writes.
import os
import re

from conan import ConanFile
from conan.errors import ConanException, ConanInvalidConfiguration
from conan.tools.build import check_min_cppstd
from conan.tools.files import copy, load, rmdir
from conan.tools.gnu import PkgConfigDeps
from conan.tools.layout import basic_layout
from conan.tools.meson import Meson, MesonToolchain
from conan.tools.scm import Version

required_conan_version = ">=2.0.9"

# Files of the repository that `meson setup -Dtests=false -Dbenchmarks=false -Dexamples=false`
# reads, relative to the repository root.
_SOURCES = ("meson.build", "meson_options.txt", "meson.options", "LICENSE", "include/*", "cmake/*")


class RtdeferConan(ConanFile):
    name = "rtdefer"
    description = ("Real-time deferred-work primitives for C++20 (task_work, irq_work, expiry "
                   "locks and timers, deferred words): the Linux kernel's mechanisms on pthreads "
                   "under SCHED_FIFO")
    license = "BSL-1.0"
    topics = ("real-time", "concurrency", "lock-free", "sched-fifo", "header-only")
    package_type = "header-library"
    settings = "os", "arch", "compiler", "build_type"
    options = {"with_uring": [True, False]}
    default_options = {"with_uring": False}
    no_copy_source = True

    @property
    def _min_cppstd(self):
        return 20

    @property
    def _compilers_minimum_version(self):
        # The oldest compilers the test matrix (scripts/test) builds and runs the library with.
        return {"gcc": "12", "clang": "22"}

    @property
    def _repo_root(self):
        return os.path.join(self.recipe_folder, "..", "..")

    def set_version(self):
        text = load(self, os.path.join(self._repo_root, "meson.build"))
        m = re.search(r"project\(\s*'rtdefer'.*?\bversion\s*:\s*'([^']+)'", text, re.DOTALL)
        if not m:
            raise ConanException("rtdefer: no version: '...' in meson.build's project() call")
        self.version = m.group(1)

    def export_sources(self):
        for pattern in _SOURCES:
            copy(self, pattern, self._repo_root, self.export_sources_folder)

    def layout(self):
        basic_layout(self, src_folder=".")

    def requirements(self):
        if self.options.with_uring:
            # Headers of liburing are part of rtdefer/uring.hpp's interface.
            self.requires("liburing/2.6", transitive_headers=True)

    def package_id(self):
        # Headers only: one package for every setting. with_uring changes package_info() (the
        # uring component and its liburing requirement), not the packaged files.
        self.info.clear()

    def validate(self):
        if self.settings.os != "Linux":
            raise ConanInvalidConfiguration(
                f"{self.ref} uses Linux futexes, SCHED_FIFO and io_uring: Linux only")
        if self.settings.compiler.get_safe("cppstd"):
            check_min_cppstd(self, self._min_cppstd)
        minimum = self._compilers_minimum_version.get(str(self.settings.compiler))
        if minimum and Version(self.settings.compiler.version) < minimum:
            raise ConanInvalidConfiguration(
                f"{self.ref} requires C++{self._min_cppstd}, which {self.settings.compiler} "
                f"{self.settings.compiler.version} does not support well enough (>= {minimum})")

    def generate(self):
        tc = MesonToolchain(self)
        tc.project_options["tests"] = False
        tc.project_options["benchmarks"] = False
        tc.project_options["examples"] = False
        tc.project_options["liburing"] = "enabled" if self.options.with_uring else "disabled"
        tc.generate()
        # meson's dependency('liburing') resolves to conan's liburing through pkg-config.
        PkgConfigDeps(self).generate()

    def build(self):
        # Configure only: nothing compiles, but the install step below needs a build directory.
        Meson(self).configure()

    def package(self):
        copy(self, "LICENSE", self.source_folder, os.path.join(self.package_folder, "licenses"))
        Meson(self).install()
        # The CMake package and .pc files that meson installs are replaced by the ones conan's
        # generators write from package_info().
        rmdir(self, os.path.join(self.package_folder, "share"))
        rmdir(self, os.path.join(self.package_folder, "lib"))

    def _header_component(self, name, cmake_target, pkg_config):
        component = self.cpp_info.components[name]
        component.set_property("cmake_target_name", cmake_target)
        component.set_property("pkg_config_name", pkg_config)
        component.bindirs = []
        component.libdirs = []
        return component

    def package_info(self):
        self.cpp_info.set_property("cmake_file_name", "rtdefer")
        # The aggregate of all components; a component below owns the name rtdefer::rtdefer.
        self.cpp_info.set_property("cmake_target_name", "rtdefer::rtdefer_all")
        self.cpp_info.set_property("pkg_config_name", "rtdefer")

        core = self._header_component("core", "rtdefer::rtdefer", "rtdefer")
        core.system_libs = ["pthread"]
        core.cxxflags = ["-pthread"]

        if self.options.with_uring:
            uring = self._header_component("uring", "rtdefer::uring", "rtdefer-uring")
            uring.defines = ["RTDEFER_HAVE_LIBURING=1"]
            uring.requires = ["core", "liburing::liburing"]
