"""Building the C runtime: find a C compiler for the target, compile, cache the result.

The compile is a fixed list of commands (no make): every `.c` under `runtime_arm/src` is
compiled with the baseline flags, except the ISA-specific int8 GEMM files, which get their
own `-march` (aarch64) or `-mavx2 -mfma` (x86_64) flags on their own architecture (elsewhere
they compile to empty units); then one static link.  The selector in `src/gemm/` picks the
fastest GEMM the running CPU supports, so one binary serves every core of an architecture.

Which compiler: `toolchain` (the `--toolchain` option) if given, else `$CC`, else the
Debian cross compiler for the target's architecture (`aarch64-linux-gnu-gcc`, for 32-bit
armv7 targets `arm-linux-gnueabihf-gcc`) or the host's `cc`.  `cc -dumpmachine` must name the
target's architecture, so a host `CC` is never used by mistake for an ARM target.

Other compilers:
  * a plain `clang` (or `clang-14`) is one compiler for every architecture: it gets
    `--target=<Debian triple>` (aarch64-linux-gnu, arm-linux-gnueabihf) on every compile and
    link, and finds headers, crt files and libc in the Debian cross sysroot
    (/usr/aarch64-linux-gnu, installed with gcc-aarch64-linux-gnu) and links with its binutils.
  * an Android NDK clang is named by its triple and API level
    (`aarch64-linux-android21-clang`, `armv7a-linux-androideabi21-clang`), a full path or found
    under `$ANDROID_NDK_HOME/toolchains/llvm/prebuilt/*/bin`.  Bionic executables are linked
    dynamically as position-independent executables (`-fPIE`, `-pie`: Android's loader refuses
    anything else since Android 5, and bionic's static libc is not meant for executables); they
    need only libc.so / libm.so / libdl.so, which every device has.
  * 32-bit armv7 (any compiler whose triple starts with `arm`): `-march=armv7-a
    -mfpu=neon-vfpv4`, the Cortex-A7/A15/A17 baseline, so the binary needs NEON.  The int8
    GEMM's NEON kernel builds for AArch32 too (gemm_s8_neon.c); the other hand-written SIMD
    kernels are AArch64 code (sdot, smmla, addv, ...) and compile to empty units, so those
    layers run the portable C kernels, which gcc auto-vectorises with NEON for integer loops.
    Float loops stay scalar VFP (gcc vectorises float with AArch32 NEON only under
    -funsafe-math-optimizations, because NEON flushes denormals), so fp32 results are IEEE.

The cache: `$EDGEKILN_CACHE/runtime/<key>/` (default `~/.cache/edgekiln/runtime`), where the
key hashes the runtime sources, the compiler's identity (`-dumpmachine`, `--version`) and
the flags.  A build goes to a temporary directory next to it and is renamed into place, so
concurrent builds never see a half-written binary.  Builds are deterministic (no debug info,
stripped, no build id, source paths relative), so the same key gives the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from edgekiln.compiler.atomic_dir import cache_entry
from edgekiln.errors import EdgekilnError

RUNTIME_DIR = Path(__file__).resolve().parents[2] / "runtime_arm"
CACHE_LAYOUT_VERSION = 1
# -fvect-cost-model=cheap: gcc >= 12's -O2 vectorizes only loops whose trip count the vector
# width divides ("very cheap"); the kernels' loops over pixels and channels need epilogues.
BASE_FLAGS = ("-std=c99", "-O2", "-fvect-cost-model=cheap", "-ffp-contract=off", "-Wall", "-Wextra", "-Iinclude",
              "-Isrc", "-Isrc/gemm")
LINK_FLAGS = ("-static", "-s", "-Wl,--build-id=none", "-pthread")
# gcc spellings clang rejects ("unknown argument"); clang's own vectorizer needs no such hint
GCC_ONLY_FLAGS = ("-fvect-cost-model=cheap",)
LIBS = ("-lm",)
# per-ISA files: (architecture they are built for, extra flags)
ISA_FLAGS = {
    "gemm_s8_neon.c": ("aarch64", ("-march=armv8-a",)),
    "gemm_s8_dotprod.c": ("aarch64", ("-march=armv8.2-a+dotprod",)),
    "gemm_s8_i8mm.c": ("aarch64", ("-march=armv8.6-a+dotprod+i8mm",)),
    "gemm_s8_avx2.c": ("x86_64", ("-mavx2", "-mfma")),
    "gemm_s8_avxvnni.c": ("x86_64", ("-mavx2", "-mfma", "-mavxvnni")),
    "gemm_s8_vnni512.c": ("x86_64", ("-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512vnni")),
    "gemm_s8_quads_vnni512.c": ("x86_64", ("-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512vnni")),
    "im2col_quads_vnni512.c": ("x86_64", ("-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512vnni")),
    "requantize_rows_vnni512.c": ("x86_64", ("-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512vnni")),
    "gemm_lowbit_neon.c": ("aarch64", ("-march=armv8-a",)),
    "gemm_lowbit_neon_mask.c": ("aarch64", ("-march=armv8-a",)),
    "gemm_lowbit_dotprod.c": ("aarch64", ("-march=armv8.2-a+dotprod",)),
    "gemm_lowbit_i8mm.c": ("aarch64", ("-march=armv8.6-a+dotprod+i8mm",)),
    "gemm_lowbit_avx2.c": ("x86_64", ("-mavx2", "-mfma")),
    "gemm_f32_avx2.c": ("x86_64", ("-mavx2", "-mfma")),
}
DEFAULT_COMPILERS = {"aarch64": "aarch64-linux-gnu-gcc", "arm": "arm-linux-gnueabihf-gcc"}
DEBIAN_PACKAGES = {"aarch64": "gcc-aarch64-linux-gnu", "arm": "gcc-arm-linux-gnueabihf", "x86_64": "gcc"}
# what a plain clang is told to build for (the Debian multiarch triples, whose sysroots it finds)
CLANG_TRIPLES = {"aarch64": "aarch64-linux-gnu", "arm": "arm-linux-gnueabihf", "x86_64": "x86_64-linux-gnu"}
# baseline code generation per architecture, on every compile and link (see the module docstring)
ARCH_FLAGS = {"arm": ("-march=armv7-a", "-mfpu=neon-vfpv4")}
# Android executables: PIE, dynamically linked against bionic (see the module docstring)
ANDROID_COMPILE_FLAGS = ("-fPIE",)
ANDROID_LINK_FLAGS = ("-pie", "-s", "-Wl,--build-id=none", "-pthread")
NDK_URL = "https://developer.android.com/ndk/downloads"
NDK_ENV = ("ANDROID_NDK_HOME", "ANDROID_NDK_ROOT", "ANDROID_NDK")
_PLAIN_CLANG = re.compile(r"clang(-\d+(\.\d+)*)?")
_NDK_CLANG = re.compile(r"(aarch64|armv7a|x86_64|i686)-linux-android(eabi)?\d+-clang")


class ToolchainError(EdgekilnError):
    """No usable C compiler for the target, or the runtime does not compile with it."""


@dataclass(frozen=True)
class Toolchain:
    cc: str           # the compiler command
    arch: str         # aarch64, x86_64, arm
    machine: str      # `cc -dumpmachine`
    version: str      # `cc --version`, first line
    flags: tuple[str, ...] = ()  # on every compile and link: a plain clang's --target=, ARCH_FLAGS

    @property
    def clang(self) -> bool:
        """clang (a plain one or the NDK's): some gcc flags are spelled differently or unknown."""
        return "clang" in self.version.lower()

    @property
    def android(self) -> bool:
        """An Android NDK compiler (bionic libc): its executables are PIE, dynamically linked."""
        return "android" in self.machine


@dataclass
class BuildResult:
    path: Path
    seconds: float    # 0.0 when served from the cache
    cached: bool
    commands: list[list[str]] = field(default_factory=list)


def machine_arch(triple: str) -> str:
    """'aarch64-linux-gnu' -> 'aarch64'; 'x86_64-pc-linux-gnu' -> 'x86_64'; 'arm-linux-gnueabihf' -> 'arm'."""
    head = triple.split("-")[0]
    if head in ("aarch64", "arm64"):
        return "aarch64"
    if head.startswith("arm"):
        return "arm"
    if head in ("x86_64", "amd64"):
        return "x86_64"
    return head


def find_toolchain(arch: str, toolchain: str | None = None) -> Toolchain:
    """The compiler for `arch`: `toolchain`, else $CC, else the default; checked to build for `arch`."""
    host_arch = machine_arch(os.uname().machine)
    chosen = toolchain or os.environ.get("CC") or (DEFAULT_COMPILERS.get(arch) if arch != host_arch else "cc")
    if chosen is None:
        raise ToolchainError(f"no default C compiler for {arch}; pass --toolchain or set CC")
    if chosen.endswith("-"):  # a prefix such as aarch64-linux-gnu-
        chosen += "gcc"
    source = "--toolchain" if toolchain else ("$CC" if os.environ.get("CC") else "the default")
    package = DEBIAN_PACKAGES.get(arch, f"a C compiler for {arch}")
    name = Path(chosen).name
    if _NDK_CLANG.fullmatch(name):
        chosen = _find_ndk_clang(chosen, source)
    elif shutil.which(chosen) is None:
        hint = (" and the target's sysroot" if _PLAIN_CLANG.fullmatch(name) else "")
        raise ToolchainError(
            f"C compiler {chosen!r} ({source}) not found: the arm_cpu backend builds its runtime for {arch} with it. "
            f"Install it{hint} (Debian: apt-get install {'clang ' if hint else ''}{package}) or name another one "
            "with --toolchain CC or the CC environment variable")
    flags: tuple[str, ...] = ()
    if _PLAIN_CLANG.fullmatch(name) and arch != host_arch and arch in CLANG_TRIPLES:
        flags = (f"--target={CLANG_TRIPLES[arch]}",)
    try:
        machine = _run([chosen, *flags, "-dumpmachine"]).strip()
        version = _run([chosen, "--version"]).splitlines()[0].strip()
    except (OSError, subprocess.CalledProcessError) as exc:
        raise ToolchainError(f"C compiler {chosen!r} ({source}) does not run: {exc}") from None
    if machine_arch(machine) != arch:
        armv7 = (" (for a 32-bit armv7 build, compile for an armv7 target: --target cortex-a7, or a target file "
                 "whose [cpu] isa is armv7-a)" if machine_arch(machine) == "arm" else "")
        raise ToolchainError(
            f"C compiler {chosen!r} ({source}) builds for {machine}, the target needs {arch}: install "
            f"{package} (Debian) or pass --toolchain / set CC to a compiler for {arch}{armv7}")
    return Toolchain(chosen, arch, machine, version, flags + ARCH_FLAGS.get(arch, ()))


def _find_ndk_clang(chosen: str, source: str) -> str:
    """An Android NDK clang given by name or path: on PATH, as a path, or under $ANDROID_NDK_HOME."""
    found = shutil.which(chosen)
    if found:
        return found
    name = Path(chosen).name
    roots = [os.environ[v] for v in NDK_ENV if os.environ.get(v)]
    if "/" not in chosen:
        for root in roots:
            candidates = sorted(Path(root).glob(f"toolchains/llvm/prebuilt/*/bin/{name}"))
            if candidates:
                return str(candidates[0])
    where = f" (searched {', '.join(f'{r}/toolchains/llvm/prebuilt/*/bin' for r in roots)})" if roots else ""
    raise ToolchainError(
        f"Android NDK compiler {chosen!r} ({source}) not found{where}: install the Android NDK ({NDK_URL}) and "
        f"pass the compiler's full path, e.g. --toolchain $ANDROID_NDK_HOME/toolchains/llvm/prebuilt/linux-x86_64/"
        f"bin/{name}, or set ANDROID_NDK_HOME to the NDK folder")


def _run(cmd: list[str], cwd: Path | None = None) -> str:
    return subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True).stdout


def runtime_sources(main: str = "src/runner_main.c") -> list[str]:
    """Runtime sources relative to RUNTIME_DIR: the library plus `main` (another program's main
    replaces runner_main.c, e.g. the fuzz harness)."""
    library = sorted(p.relative_to(RUNTIME_DIR).as_posix() for p in (RUNTIME_DIR / "src").rglob("*.c"))
    library = [s for s in library if s != "src/runner_main.c"]
    return library + [main]


def cache_root() -> Path:
    base = os.environ.get("EDGEKILN_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "edgekiln") / "runtime"


def _source_digest(sources: list[str]) -> str:
    h = hashlib.sha256()
    files = sorted({*sources, *(p.relative_to(RUNTIME_DIR).as_posix()
                                for d in ("include", "src") for p in (RUNTIME_DIR / d).rglob("*.h"))})
    for rel in files:
        data = (RUNTIME_DIR / rel).read_bytes()
        h.update(f"{rel}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()


def compile_flags(tc: Toolchain) -> tuple[str, ...]:
    """What every runtime compile with `tc` gets: its own flags (--target=, ARCH_FLAGS), -fPIE for
    Android, and BASE_FLAGS in the compiler's dialect (clang drops the gcc-only ones)."""
    base = tuple(f for f in BASE_FLAGS if not (tc.clang and f in GCC_ONLY_FLAGS))
    return (*tc.flags, *(ANDROID_COMPILE_FLAGS if tc.android else ()), *base)


def compile_commands(tc: Toolchain, sources: list[str], out_dir: Path, output: str, extra_flags: tuple[str, ...] = (),
                     static: bool = True) -> list[list[str]]:
    """The exact commands of a build: one per source (run in RUNTIME_DIR), then the link."""
    commands, objects = [], []
    for rel in sources:
        isa = ISA_FLAGS.get(Path(rel).name)
        flags = isa[1] if isa and isa[0] == tc.arch else ()
        obj = out_dir / (rel.replace("/", "__") + ".o")
        objects.append(str(obj))
        commands.append([tc.cc, *compile_flags(tc), *extra_flags, *flags,
                         f"-ffile-prefix-map={RUNTIME_DIR}=.", "-c", rel, "-o", str(obj)])
    # bionic: a dynamic PIE even when `static` is asked for (the only executable Android runs)
    link_flags = ANDROID_LINK_FLAGS if tc.android else (LINK_FLAGS if static else ("-pthread",))
    link = [tc.cc, *tc.flags, *extra_flags, *link_flags, *objects, *LIBS, "-o", str(out_dir / output)]
    return commands + [link]


def build_program(tc: Toolchain, *, main: str = "src/runner_main.c", output: str = "ek_run",
                  extra_flags: tuple[str, ...] = (), static: bool = True) -> BuildResult:
    """Build (or fetch from the cache) one runtime program; returns where the binary is."""
    sources = runtime_sources(main)
    key_data = {"layout": CACHE_LAYOUT_VERSION, "sources": _source_digest(sources), "cc": tc.cc, "machine": tc.machine,
                "version": tc.version, "flags": tc.flags, "base": BASE_FLAGS, "extra": extra_flags, "static": static, "link": LINK_FLAGS,
                "isa": sorted((k, v[0], v[1]) for k, v in ISA_FLAGS.items()), "output": output}
    key = hashlib.sha256(json.dumps(key_data, sort_keys=True).encode()).hexdigest()[:24]
    final = cache_root() / f"{tc.arch}-{key}"
    if (final / output).is_file():
        return BuildResult(final / output, 0.0, True)
    start = time.perf_counter()
    with cache_entry(final) as staging:
        commands = compile_commands(tc, sources, staging, output, extra_flags, static)
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            errors = [e for e in pool.map(_compile, commands[:-1]) if e]
        if errors:
            raise ToolchainError(f"the runtime does not compile with {tc.cc} ({tc.version}){_sysroot_hint(tc)} "
                                 f"({len(errors)} of {len(commands) - 1} files failed; the first):\n"
                                 + _first_lines(errors[0]))
        link_error = _compile(commands[-1])
        if link_error:
            raise ToolchainError(f"linking the runtime with {tc.cc} failed{_sysroot_hint(tc)}:\n"
                                 + _first_lines(link_error))
        for obj in staging.glob("*.o"):
            obj.unlink()
        (staging / "build.json").write_text(json.dumps({**key_data, "commands": commands}, indent=1, default=list))
    return BuildResult(final / output, time.perf_counter() - start, False, commands)


def _first_lines(error: str, lines: int = 12) -> str:
    """A failed command and the start of its stderr: the first error is the one to read."""
    kept = error.splitlines()
    return "\n".join(kept[:lines] + ([f"... ({len(kept) - lines} more lines)"] if len(kept) > lines else []))


def _sysroot_hint(tc: Toolchain) -> str:
    """A plain clang cross-compiles with the Debian sysroot of its --target: name the package."""
    target = next((f.split("=", 1)[1] for f in tc.flags if f.startswith("--target=")), None)
    if target is None:
        return ""
    return (f" (clang --target={target} takes headers and libc from /usr/{target}: Debian: apt-get install "
            f"{DEBIAN_PACKAGES.get(tc.arch, 'the cross gcc')})")


def _compile(cmd: list[str]) -> str:
    proc = subprocess.run(cmd, cwd=RUNTIME_DIR, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return f"$ {' '.join(cmd)}\n{proc.stderr.strip()}"
    return ""
