"""scripts/lib/packaging.py: the checks scripts/check_packaging runs on the conan recipe and the
vcpkg port without either tool (neither is on CI). Each subcommand prints one line, PASS or FAIL
with the reasons, and exits non-zero on FAIL.

  recipe ROOT          every conanfile compiles; the recipe, run against stand-ins for conan's
                       API, reads its version from meson.build, passes the meson options the port
                       passes, and declares the targets and modules the installed package has
  port ROOT            vcpkg.json and portfile.cmake carry what the registry requires
  meson-options ROOT   the port's meson options (uring feature off), one a line
  config-path ROOT     the directory the port expects the CMake package in (CONFIG_PATH)
  versions ROOT PREFIX meson.build, recipe, vcpkg.json, installed .pc and CMake version file and
                       CHANGELOG.md name the same version
"""
import json
import os
import py_compile
import re
import subprocess
import sys
import tempfile
import types

RECIPE = "packaging/conan/conanfile.py"
PORT = "packaging/vcpkg/ports/rtdefer"


def fail(name, problems):
    print(f"FAIL {name}: " + "; ".join(problems))
    sys.exit(1)


def meson_version(root):
    out = subprocess.run(["meson", "introspect", "--projectinfo", os.path.join(root, "meson.build")],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)["version"]


# --- the recipe, run against stand-ins for the parts of conan's API it calls -------------------
class _Any:
    """Stands for any conan name the recipe imports but this check does not exercise."""

    def __init__(self, *a, **k):
        pass

    def __call__(self, *a, **k):
        return _Any()

    def __getattr__(self, name):
        return _Any()


class _Toolchain:
    last = None

    def __init__(self, conanfile):
        self.project_options = {}

    def generate(self):
        _Toolchain.last = dict(self.project_options)


class _CppInfo:
    def __init__(self):
        self.properties = {}
        self.components = _Components()

    def set_property(self, key, value):
        self.properties[key] = value


class _Components(dict):
    def __missing__(self, key):
        self[key] = _CppInfo()
        return self[key]


def _stub_conan():
    def module(name, **attrs):
        m = types.ModuleType(name)
        m.__getattr__ = lambda attr: _Any
        m.__dict__.update(attrs)
        sys.modules[name] = m
        return m

    module("conan", ConanFile=object)
    module("conan.errors", ConanException=RuntimeError, ConanInvalidConfiguration=RuntimeError)
    module("conan.tools")
    module("conan.tools.files",
           load=lambda _self, path: open(path, encoding="utf-8").read())
    module("conan.tools.meson", MesonToolchain=_Toolchain)
    for sub in ("build", "gnu", "layout", "scm", "cmake"):
        module("conan.tools." + sub)


def _load_recipe(root):
    _stub_conan()
    spec_globals = {"__name__": "rtdefer_recipe", "__file__": os.path.join(root, RECIPE)}
    with open(os.path.join(root, RECIPE), encoding="utf-8") as f:
        exec(compile(f.read(), RECIPE, "exec"), spec_globals)
    return spec_globals["RtdeferConan"]


def _run_recipe(cls, root, with_uring):
    r = cls()
    r.recipe_folder = os.path.join(root, "packaging", "conan")
    r.options = types.SimpleNamespace(with_uring=with_uring)
    r.cpp_info = _CppInfo()
    r.set_version()
    r.generate()
    r.package_info()
    return r, _Toolchain.last


def port_options(root, uring):
    text = open(os.path.join(root, PORT, "portfile.cmake"), encoding="utf-8").read()
    m = re.search(r"vcpkg_configure_meson\((.*?)\n\)", text, re.DOTALL)
    if not m:
        return None
    opts = re.findall(r"-D(\w+)=(\S+)", m.group(1))
    value = {"${liburing}": "enabled" if uring else "disabled"}
    return {k: value.get(v, v) for k, v in opts}


def config_path(root):
    """The CONFIG_PATH the port gives vcpkg_cmake_config_fixup: where it expects our CMake package."""
    text = open(os.path.join(root, PORT, "portfile.cmake"), encoding="utf-8").read()
    m = re.search(r"vcpkg_cmake_config_fixup\(\s*CONFIG_PATH\s+(\S+?)\s*\)", text)
    return m.group(1) if m else None


def _meson_value(v):
    return {True: "true", False: "false"}.get(v, v)


def check_recipe(root):
    problems = []
    tmp = tempfile.mkdtemp()
    for dirpath, _dirs, files in os.walk(os.path.join(root, "packaging", "conan")):
        for f in files:
            if f == "conanfile.py":
                try:
                    py_compile.compile(os.path.join(dirpath, f), cfile=os.path.join(tmp, "c.pyc"),
                                       doraise=True)
                except py_compile.PyCompileError as e:
                    problems.append(str(e))
    if problems:
        fail("recipe", problems)
    cls = _load_recipe(root)
    if cls.package_type != "header-library":
        problems.append(f"package_type is {cls.package_type!r}")
    if cls.license != "BSL-1.0":
        problems.append(f"license is {cls.license!r}")
    if cls.default_options.get("with_uring") is not False:
        problems.append("with_uring must default to False")
    for uring in (False, True):
        r, tc = _run_recipe(cls, root, uring)
        if r.version != meson_version(root):
            problems.append(f"set_version() gave {r.version!r}")
        got = {k: _meson_value(v) for k, v in (tc or {}).items()}
        want = port_options(root, uring)
        if got != want:
            problems.append(f"with_uring={uring}: recipe meson options {got} != port's {want}")
        info = r.cpp_info
        comps = info.components
        if info.properties.get("cmake_file_name") != "rtdefer":
            problems.append("cmake_file_name is not rtdefer")
        core = comps.get("core")
        if core is None or core.properties.get("cmake_target_name") != "rtdefer::rtdefer" or \
                core.properties.get("pkg_config_name") != "rtdefer" or \
                getattr(core, "requires", []):
            problems.append("component core must be rtdefer::rtdefer / rtdefer.pc, requiring nothing")
        ur = comps.get("uring")
        if uring:
            if ur is None or ur.properties.get("cmake_target_name") != "rtdefer::uring" or \
                    ur.properties.get("pkg_config_name") != "rtdefer-uring" or \
                    "liburing::liburing" not in getattr(ur, "requires", []):
                problems.append("with_uring: component uring must be rtdefer::uring / "
                                "rtdefer-uring.pc requiring liburing::liburing")
        elif ur is not None:
            problems.append("with_uring=False declares a uring component")
    if problems:
        fail("recipe", problems)
    print(f"PASS recipe: conanfiles compile; version {r.version}; meson options agree with the "
          f"port's; components {sorted(comps)} with uring")


def check_port(root):
    problems = []
    d = os.path.join(root, PORT)
    try:
        manifest = json.load(open(os.path.join(d, "vcpkg.json"), encoding="utf-8"))
    except (OSError, ValueError) as e:
        fail("port", [f"vcpkg.json: {e}"])
    for key, want in (("name", "rtdefer"), ("license", "BSL-1.0")):
        if manifest.get(key) != want:
            problems.append(f"vcpkg.json {key} is {manifest.get(key)!r}, not {want!r}")
    if not re.fullmatch(r"\d+\.\d+\.\d+", str(manifest.get("version", ""))):
        problems.append("vcpkg.json has no \"version\": \"X.Y.Z\"")
    hosts = {x["name"] for x in manifest.get("dependencies", [])
             if isinstance(x, dict) and x.get("host")}
    for need in ("vcpkg-tool-meson", "vcpkg-cmake-config"):
        if need not in hosts:
            problems.append(f"{need} is not a host dependency")
    uring = manifest.get("features", {}).get("uring", {})
    if "liburing" not in [x if isinstance(x, str) else x.get("name")
                          for x in uring.get("dependencies", [])]:
        problems.append("feature uring does not depend on liburing")
    text = open(os.path.join(d, "portfile.cmake"), encoding="utf-8").read()
    for need in ("set(VCPKG_BUILD_TYPE release)", "vcpkg_configure_meson(", "vcpkg_install_meson()",
                 "vcpkg_fixup_pkgconfig()", "vcpkg_install_copyright("):
        if need not in text:
            problems.append(f"portfile.cmake lacks {need}")
    if not config_path(root):
        problems.append("portfile.cmake lacks vcpkg_cmake_config_fixup(CONFIG_PATH <dir>)")
    opts = port_options(root, False) or {}
    for k, v in (("tests", "false"), ("benchmarks", "false"), ("examples", "false"),
                 ("liburing", "disabled")):
        if opts.get(k) != v:
            problems.append(f"portfile passes -D{k}={opts.get(k)}, not {v}")
    if port_options(root, True).get("liburing") != "enabled":
        problems.append("feature uring does not pass -Dliburing=enabled")
    if not os.path.isfile(os.path.join(d, "usage")):
        problems.append("no usage file")
    if problems:
        fail("port", problems)
    print(f"PASS port: vcpkg.json {manifest['version']}, host deps, feature uring -> liburing; "
          "portfile calls; usage")


def _read(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError:
        return ""


def _group(pattern, text):
    m = re.search(pattern, text, re.M)
    return m.group(1) if m else "nothing (file missing or no version in it)"


def check_versions(root, prefix):
    want = meson_version(root)
    found = {"meson.build": want}
    cls = _load_recipe(root)
    found["conanfile.py"] = _run_recipe(cls, root, False)[0].version
    found["vcpkg.json"] = json.loads(_read(os.path.join(root, PORT, "vcpkg.json")) or "{}").get("version")
    pc = _read(os.path.join(prefix, "share", "pkgconfig", "rtdefer.pc"))
    found["rtdefer.pc"] = _group(r"^Version: (\S+)", pc)
    cv = _read(os.path.join(prefix, "share", "cmake", "rtdefer", "rtdeferConfigVersion.cmake"))
    found["rtdeferConfigVersion.cmake"] = _group(r'PACKAGE_VERSION "([^"]+)"', cv)
    log = _read(os.path.join(root, "CHANGELOG.md"))
    heads = re.findall(r"^## \[(\d+\.\d+\.\d+)\]", log, re.M)
    found["CHANGELOG.md"] = want if want in heads else f"no '## [{want}]' entry (has {heads})"
    bad = [f"{k} says {v}" for k, v in found.items() if v != want]
    if bad:
        fail("versions", [f"meson.build says {want}"] + bad)
    print(f"PASS versions: {want} in " + ", ".join(found))


def main(argv):
    cmd, root = argv[1], os.path.abspath(argv[2])
    if cmd == "recipe":
        check_recipe(root)
    elif cmd == "port":
        check_port(root)
    elif cmd == "meson-options":
        for k, v in port_options(root, False).items():
            print(f"-D{k}={v}")
    elif cmd == "config-path":
        print(config_path(root) or sys.exit("no CONFIG_PATH in portfile.cmake"))
    elif cmd == "versions":
        check_versions(root, os.path.abspath(argv[3]))
    else:
        sys.exit(f"unknown subcommand {cmd}")


if __name__ == "__main__":
    main(sys.argv)
