#!/usr/bin/env bash
# Build dependencies for the GPU host, which has CMake and nvcc but not the Debian -dev packages
# dsv4's CMakeLists.txt requires (nlohmann_json, PCRE2 via pkg-config, GoogleTest) and no network.
#   here (has apt):    scripts/device_deps.sh download        -> .deb files into <repo>/.deb (git-ignored)
#   on the GPU host:   source <(scripts/device_deps.sh unpack PREFIX)
#                      unpacks every carried .deb under PREFIX with dpkg -x (never into /) and prints
#                      the exports (CMAKE_PREFIX_PATH, PKG_CONFIG_PATH, PATH) that point CMake at it.
# scripts/gpu_suite.sh calls the unpack step itself; pass `carry: [".deb"]` to the device run.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
debs="$repo/.deb"
# libpcre2-dev's libpcre2-8.so is a link into libpcre2-8-0; pkgconf/pkgconf-bin/libpkgconf3 give a
# pkg-config in case the host has none; libgtest-dev ships static libraries and CMake config files;
# the server's cpp-httplib is a compiled library whose pkg-config file requires openssl, zlib and
# brotli (their -dev packages for the .pc files and headers, the runtime libraries for linking).
packages=(nlohmann-json3-dev libpcre2-dev libpcre2-8-0 libgtest-dev pkgconf pkgconf-bin libpkgconf3
          libcpp-httplib-dev libcpp-httplib0.11 libssl-dev libssl3 zlib1g-dev zlib1g libbrotli-dev libbrotli1)

case "${1:-}" in
  download)
    mkdir -p "$debs"
    (cd "$debs" && apt-get download "${packages[@]}")
    ls -l "$debs"
    ;;
  unpack)
    prefix=${2:?usage: device_deps.sh unpack PREFIX}
    ls "$debs"/*.deb > /dev/null 2>&1 || { echo "device_deps.sh: no .deb files in $debs (run 'download' here and carry .deb)" >&2; exit 1; }
    mkdir -p "$prefix"
    for f in "$debs"/*.deb; do dpkg -x "$f" "$prefix"; done
    # .pc files name prefix=/usr; make them point into the unpacked tree.
    find "$prefix" -name '*.pc' -exec sed -i "s|^prefix=/usr\$|prefix=$prefix/usr|" {} +
    arch_lib="$prefix/usr/lib/x86_64-linux-gnu"
    echo "export CMAKE_PREFIX_PATH=$prefix/usr\${CMAKE_PREFIX_PATH:+:\$CMAKE_PREFIX_PATH}"
    echo "export PKG_CONFIG_PATH=$arch_lib/pkgconfig:$prefix/usr/share/pkgconfig\${PKG_CONFIG_PATH:+:\$PKG_CONFIG_PATH}"
    echo "export LD_LIBRARY_PATH=$arch_lib:$prefix/lib/x86_64-linux-gnu\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
    if ! command -v pkg-config > /dev/null; then
      echo "export PATH=$prefix/usr/bin:\$PATH"
    fi
    ;;
  *)
    echo "usage: $0 download | unpack PREFIX" >&2
    exit 2
    ;;
esac
