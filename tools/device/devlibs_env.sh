# devlibs_env.sh — source THERE (the GPU machine), from the repo root, before building: points the compiler,
# the linker and the loader at the libraries carried in .devlibs/ (see make_devlibs.sh), creates the
# unversioned .so links the linker looks for, and puts nvcc on PATH.
if [ -d .devlibs/lib ]; then
    for f in .devlibs/lib/*.so.*; do ln -sf "$(basename "$f")" "${f%%.so.*}.so"; done
    export LIBRARY_PATH="$PWD/.devlibs/lib${LIBRARY_PATH:+:$LIBRARY_PATH}"
    export LD_LIBRARY_PATH="$PWD/.devlibs/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    export C_INCLUDE_PATH="$PWD/.devlibs/include${C_INCLUDE_PATH:+:$C_INCLUDE_PATH}"
fi
if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then export PATH=/usr/local/cuda/bin:$PATH; fi
