{
  # Builds the CPU backend (oneDNN) as build/Release/repvgg_cpu.node. Needs Debian's libdnnl-dev and libjpeg62-turbo-dev.
  "targets": [
    {
      "target_name": "repvgg_cpu",
      "sources": [
        "native/addon/addon.cc",
        "native/cpu/dnnl_common.cc",
        "native/cpu/conv.cc",
        "native/cpu/norm.cc",
        "native/cpu/eltwise.cc",
        "native/cpu/pool.cc",
        "native/cpu/linear.cc",
        "native/cpu/loss.cc",
        "native/cpu/optim.cc",
        "native/cpu/program.cc",
        "native/cpu/winograd.cc",
        "native/cpu/gemm_conv.cc",
        "native/cpu/small_input_conv.cc",
        "native/cpu/bf16_gemm.cc",
        "native/cpu/f32_gemm.cc",
        "native/cpu/resample.cc",
        "native/cpu/jpeg.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS"],
      "cflags!": ["-fno-exceptions", "-fno-rtti"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti"],
      "cflags_cc": ["-std=c++17", "-O3", "-fopenmp", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "ldflags": ["-fopenmp"],
      "libraries": ["-ldnnl", "-ljpeg"]
    }
  ]
}
