// A minimal libtorch host that loads a TorchScript file the way the nn~ external does
// (reference/nntilde.md §1.2-1.4): list methods and attributes, then run every method on buffers.
// Usage: nn_host MODEL.ts [BUFFER] [BATCHES]. Prints one line per finding; exit 0 when all pass.
// Each run prints `RUN method batch B call K ok ABSMAX MEANABS` (the host's output of that buffer).
#include <torch/script.h>

#include <cmath>
#include <iomanip>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

namespace {

int failures = 0;

void fail(const std::string& what) {
  std::cout << "FAIL " << what << std::endl;
  ++failures;
}

std::vector<std::string> list_methods(torch::jit::Module& model) {
  std::vector<std::string> names;
  if (auto getter = model.find_method("get_methods")) {
    for (const auto& v : (*getter)({}).toListRef()) names.push_back(v.toStringRef());
    return names;
  }
  for (const auto& m : model.get_methods()) {
    if (model.hasattr(m.name() + "_params")) names.push_back(m.name());
  }
  return names;
}

// One buffer through one method, as the host's perform() builds and reads it.
void perform(torch::jit::Module& model, const std::string& name, int64_t buffer, int64_t batches,
             int64_t call) {
  auto p = model.attr(name + "_params").toTensor();
  int64_t in_ch = p[0].item<int64_t>(), in_ratio = p[1].item<int64_t>();
  int64_t out_ch = p[2].item<int64_t>(), out_ratio = p[3].item<int64_t>();
  c10::InferenceMode guard;
  auto t = torch::arange(buffer, torch::kFloat32).add(call * buffer).mul(2 * M_PI * 220.0 / 44100.0);
  auto audio = torch::sin(t).mul(0.5).expand({in_ch * batches, buffer}).contiguous();
  auto x = audio.reshape({in_ch, batches, -1, in_ratio}).select(-1, -1).permute({1, 0, 2}).contiguous();
  torch::Tensor y;
  try {
    y = model.get_method(name)({x}).toTensor();
  } catch (const std::exception& e) {
    fail(name + " threw: " + std::string(e.what()).substr(0, 200));
    return;
  }
  if (y.dim() != 3 || y.scalar_type() != torch::kFloat32 || y.size(0) != batches || y.size(1) != out_ch ||
      y.size(2) * out_ratio != buffer) {
    fail(name + " returned " + std::to_string(y.dim()) + "-d " + std::string(c10::toString(y.scalar_type())) +
         " of " + std::to_string(y.numel()) + " values");
    return;
  }
  auto out = y.repeat_interleave(out_ratio).reshape({batches, out_ch, -1});
  if (out.size(-1) != buffer) fail(name + " output size is not consistent");
  if (!torch::isfinite(out).all().item<bool>()) fail(name + " produced NaN or Inf");
  // absmax and mean |y| of what the host would play, to compare with another runtime on the same input
  std::cout << std::setprecision(9) << "RUN " << name << " batch " << batches << " call " << call << " ok "
            << out.abs().max().item<float>() << " " << out.abs().mean().item<float>() << std::endl;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: nn_host MODEL.ts [BUFFER] [BATCHES]" << std::endl;
    return 2;
  }
  int64_t buffer = argc > 2 ? std::stoll(argv[2]) : 4096;
  int64_t batches = argc > 3 ? std::stoll(argv[3]) : 1;
  torch::jit::Module model;
  try {
    model = torch::jit::load(argv[1]);
  } catch (const std::exception& e) {
    std::cout << "FAIL load: " << std::string(e.what()).substr(0, 200) << std::endl;
    return 1;
  }
  model.eval();
  auto methods = list_methods(model);
  for (const auto& name : methods) {
    if (!model.hasattr(name + "_params")) {
      fail(name + " has no _params");
      continue;
    }
    auto p = model.attr(name + "_params").toTensor();
    std::cout << "METHOD " << name;
    for (int i = 0; i < 4; ++i) std::cout << " " << p[i].item<int64_t>();
    std::cout << std::endl;
  }
  if (auto sr = model.find_method("get_sample_rate")) {
    std::cout << "SAMPLE_RATE " << (*sr)({}).toInt() << std::endl;
  }
  if (auto attrs = model.find_method("get_attributes")) {
    for (const auto& a : (*attrs)({}).toListRef()) {
      std::string name = a.toStringRef();
      auto value = model.get_method("get_" + name)({});
      std::vector<c10::IValue> args;
      if (value.isTuple()) {
        for (const auto& v : value.toTupleRef().elements()) args.push_back(v);
      } else if (value.isList()) {
        for (const auto& v : value.toListRef()) args.push_back(v);
      } else {
        fail("get_" + name + " returns neither a tuple nor a list");
        continue;
      }
      int64_t status = model.get_method("set_" + name)(args).toInt();
      std::cout << "ATTRIBUTE " << name << " values " << args.size() << " set " << status << std::endl;
      if (status != 0) fail("set_" + name + " returned " + std::to_string(status));
    }
  }
  // each buffer in a fresh thread, in order, on one module instance (the host's threaded mode)
  for (const auto& name : methods) {
    for (int64_t call = 0; call < 3; ++call) {
      std::thread worker(perform, std::ref(model), name, buffer, batches, call);
      worker.join();
    }
  }
  std::cout << (failures ? "RESULT FAIL" : "RESULT PASS") << std::endl;
  return failures ? 1 : 0;
}
