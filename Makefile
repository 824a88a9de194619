# dsv4 build (GNU Make). Why Make and not CMake: one flat file a person can read, C11 + optional nvcc,
# two variants (release, asan). Sources are found by wildcard, so adding a file needs no edit here.
#
#   make            release build: build/release/dsv4 (and lib, tests)
#   make test       ASan+UBSan build of everything, then runs tests/run_tests.sh (closing line: N passed, N failed)
#   make fuzz       libFuzzer targets for the parsers of untrusted input (clang; tests/fuzz/README.md)
#   make cuda=0     skip the CUDA backend even if nvcc is present

CC      ?= cc
NVCC    ?= nvcc
VARIANT ?= release
BUILD   := build/$(VARIANT)

HAVE_NVCC := $(shell command -v $(NVCC) >/dev/null 2>&1 && echo 1 || echo 0)
cuda ?= $(HAVE_NVCC)

CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(shell command -v $(NVCC) 2>/dev/null))

WARN    := -Wall -Wextra -Wno-unused-parameter
# -ffp-contract=off: no silent FMA contraction, so the CPU reference rounds exactly where the spec says
# and gives bitwise-identical results across builds.
CFLAGS_COMMON := -std=c11 -D_GNU_SOURCE -pthread -ffp-contract=off $(WARN)
DEPFLAGS := -MMD -MP

# Include paths per folder: the layering of docs/ARCHITECTURE.md ("Layering") enforced by the build. The CLI
# sees only the public headers (include/) and its own; the library sees src/ and include/; tests and benches
# test internals. tests/cli/test_layering.sh checks both (`make print-tool-cflags` prints the CLI's flags).
LIB_INC   := -Isrc -Iinclude
TOOL_INC  := -Iinclude -Itools/dsv4
TEST_INC  := -Iinclude -Isrc -Itests/common
BENCH_INC := -Iinclude -Isrc
ifeq ($(VARIANT),asan)
  CFLAGS_V := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
  LDFLAGS_V := -fsanitize=address,undefined
else
  CFLAGS_V := -O2 -g
  LDFLAGS_V :=
endif
CFLAGS  += $(CFLAGS_COMMON) $(CFLAGS_V)
LDLIBS  := -ljansson -lpcre2-8 -lmicrohttpd -ledit -lm -lpthread

# `dsv4 --version`: the version and the git revision at build time ("-dirty" with uncommitted changes to
# tracked files), baked into tools/dsv4/main.c only; a stamp file rewritten when the revision changes makes
# main.o rebuild then.
DSV4_VERSION := 0.1.0
GIT_REV := $(shell r=$$(git rev-parse --short=12 HEAD 2>/dev/null) || r=unknown; \
             [ $$r = unknown ] || [ -z "$$(git status --porcelain -uno 2>/dev/null)" ] || r=$$r-dirty; echo $$r)
REV_STAMP := $(BUILD)/git_rev.txt
$(shell mkdir -p $(BUILD); [ "$$(cat $(REV_STAMP) 2>/dev/null)" = "$(GIT_REV)" ] || echo "$(GIT_REV)" > $(REV_STAMP))

LIB_SRC  := $(wildcard src/*/*.c src/*/*/*.c)
TOOL_SRC := $(wildcard tools/dsv4/*.c)
TEST_SRC := $(wildcard tests/unit/*.c tests/model/*.c)
BENCH_SRC:= $(wildcard bench/*.c)
CU_SRC   := $(wildcard src/backend/cuda/*.cu src/backend/cuda/*/*.cu src/backend/cuda/*/*/*.cu)

ifeq ($(cuda),1)
  CFLAGS  += -DDSV4_HAVE_CUDA=1
  NVFLAGS := -std=c++17 -O3 -Iinclude -Isrc -lineinfo -gencode=arch=compute_90a,code=sm_90a \
             -Xcompiler -Wall,-fno-strict-aliasing --expt-relaxed-constexpr
  LIB_CU_OBJ := $(CU_SRC:%.cu=$(BUILD)/%.cu.o)
  LDLIBS  += -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcublasLt -lcublas \
             -lculibos -lcudart_static -ldl -lrt -lstdc++
else
  LIB_CU_OBJ :=
endif

LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o) $(LIB_CU_OBJ)
LIB      := $(BUILD)/libdsv4.a
DSV4     := $(BUILD)/dsv4
TESTS    := $(TEST_SRC:%.c=$(BUILD)/%)
BENCHES  := $(BENCH_SRC:%.c=$(BUILD)/%)
TEST_HELPERS := $(wildcard tests/common/*.c)
TEST_HELPER_OBJ := $(TEST_HELPERS:%.c=$(BUILD)/%.o)

.PHONY: all test test-release fuzz clean bench print-tool-cflags
.SECONDARY:
all: $(DSV4) $(TESTS) $(BENCHES)

$(BUILD)/src/%.o: CFLAGS += $(LIB_INC)
$(BUILD)/tools/%.o: CFLAGS += $(TOOL_INC)
$(BUILD)/tests/%.o: CFLAGS += $(TEST_INC)
$(BUILD)/bench/%.o: CFLAGS += $(BENCH_INC)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(DEPFLAGS) -c $< -o $@

$(BUILD)/tools/dsv4/main.o: $(REV_STAMP)
$(BUILD)/tools/dsv4/main.o: CFLAGS += -DDSV4_VERSION='"$(DSV4_VERSION)"' -DDSV4_GIT_REV='"$(GIT_REV)"'

$(BUILD)/%.cu.o: %.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVFLAGS) -c $< -o $@

$(LIB): $(LIB_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(DSV4): $(TOOL_SRC:%.c=$(BUILD)/%.o) $(LIB)
	$(CC) $(LDFLAGS_V) -o $@ $(filter %.o,$^) $(LIB) $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/tests/%.o $(TEST_HELPER_OBJ) $(LIB)
	$(CC) $(LDFLAGS_V) -o $@ $< $(TEST_HELPER_OBJ) $(LIB) $(LDLIBS)

$(BUILD)/bench/%: $(BUILD)/bench/%.o $(LIB)
	$(CC) $(LDFLAGS_V) -o $@ $< $(LIB) $(LDLIBS)

# The test suite always runs under AddressSanitizer + UndefinedBehaviorSanitizer.
test:
	$(MAKE) VARIANT=asan all
	DSV4_BUILD=build/asan tests/run_tests.sh

# Same suite on the optimized build (faster; used for timing-sensitive checks by hand).
test-release: all
	DSV4_BUILD=build/release tests/run_tests.sh

FUZZ_CC  := clang -std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
            $(WARN) -Iinclude -Isrc
FUZZ_TOK := src/tokenizer/tokenizer.c src/tokenizer/pretok.c src/tokenizer/unicode_classes.c src/tokenizer/utf8.c src/core/files.c
fuzz:
	@mkdir -p build/fuzz
	$(FUZZ_CC) tests/fuzz/fuzz_safetensors.c src/model/safetensors.c src/core/files.c src/core/status.c \
	  -o build/fuzz/fuzz_safetensors -ljansson -lm
	$(FUZZ_CC) tests/fuzz/fuzz_tokenizer.c $(FUZZ_TOK) tools/dsv4/cli_util.c src/core/status.c \
	  -o build/fuzz/fuzz_tokenizer -ljansson -lpcre2-8 -lm
	$(FUZZ_CC) tests/fuzz/fuzz_chat.c src/tokenizer/chat.c src/tokenizer/pyjson.c $(FUZZ_TOK) src/core/status.c \
	  -o build/fuzz/fuzz_chat -ljansson -lpcre2-8 -lm
	$(FUZZ_CC) tests/fuzz/fuzz_dsml.c src/tokenizer/dsml.c src/tokenizer/pyjson.c $(FUZZ_TOK) src/core/status.c \
	  -o build/fuzz/fuzz_dsml -ljansson -lpcre2-8 -lm
	$(FUZZ_CC) tests/fuzz/fuzz_config.c src/model/config.c src/core/npy.c src/core/files.c src/core/status.c \
	  -o build/fuzz/fuzz_config -ljansson -lm
	$(FUZZ_CC) tests/fuzz/fuzz_request.c src/server/api.c src/server/api_openai.c src/server/api_anthropic.c \
	  src/tokenizer/chat.c src/tokenizer/pyjson.c src/engine/sampler.c $(FUZZ_TOK) src/core/status.c \
	  -o build/fuzz/fuzz_request -ljansson -lpcre2-8 -lm
	$(FUZZ_CC) -pthread -ffp-contract=off tests/fuzz/fuzz_checkpoint.c $(LIB_SRC) \
	  -o build/fuzz/fuzz_checkpoint -ljansson -lpcre2-8 -lmicrohttpd -lm -lpthread -ldl

# The flags a tools/dsv4 source is compiled with (tests/cli/test_layering.sh compiles probes with them).
print-tool-cflags:
	@echo $(CFLAGS) $(TOOL_INC)

clean:
	rm -rf build

-include $(shell find build -name '*.d' 2>/dev/null)
