// The δ-mem decode step for one token per sequence on the CPU, as one native op: projection, activations, read
// and write. At batch 1 the PyTorch path is ~15 tensor operations per layer whose dispatch costs far more than
// the ~18k multiply-adds they do; here the whole step is one call (plain loops; one GEMM for the projection of larger batches). float32 only (the embedded model's dtype);
// the Python side sends other dtypes down the PyTorch path. Registered as torch.ops.deltamem.decode_step_cpu.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <tuple>
#include <vector>

namespace {

constexpr float kL2Eps = 1e-6f;
constexpr int64_t kLoopRows = 2;  // up to this many rows the projection runs as dot products here
constexpr int64_t kLanes = 8;     // independent partial sums, so the compiler can vectorise without reassociating

float dot(const float* a, const float* b, int64_t n) {
  float acc[kLanes] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int64_t l = 0; l < kLanes; ++l) acc[l] += a[i + l] * b[i + l];
  }
  float total = 0.f;
  for (int64_t l = 0; l < kLanes; ++l) total += acc[l];
  for (; i < n; ++i) total += a[i] * b[i];
  return total;
}

void tanh_l2_normalise(float* v, int64_t n) {
  float sum_sq = 0.f;
  for (int64_t i = 0; i < n; ++i) {
    v[i] = std::tanh(v[i]);
    sum_sq += v[i] * v[i];
  }
  const float norm = std::max(std::sqrt(sum_sq), kL2Eps);
  for (int64_t i = 0; i < n; ++i) v[i] /= norm;
}

std::tuple<at::Tensor, at::Tensor> decode_step_cpu(const at::Tensor& x, const at::Tensor& weight,
                                                   const at::Tensor& beta_bias, const at::Tensor& state,
                                                   const c10::optional<at::Tensor>& write, int64_t heads,
                                                   int64_t rank) {
  const int64_t batch = x.size(0), dim = x.size(1), width = heads * rank;
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kFloat && x.is_contiguous(), "x must be contiguous float32 [B, d]");
  TORCH_CHECK(weight.scalar_type() == at::kFloat && weight.is_contiguous() && weight.dim() == 2 &&
                  weight.size(0) == 4 * width && weight.size(1) == dim,
              "weight must be contiguous float32 [4*N*r, d]");
  TORCH_CHECK(beta_bias.scalar_type() == at::kFloat && beta_bias.is_contiguous() && beta_bias.numel() == width,
              "beta_bias must be contiguous float32 [N*r]");
  TORCH_CHECK(state.scalar_type() == at::kFloat && state.dim() == 4 && state.size(0) == batch &&
                  state.size(1) == heads && state.size(2) == rank && state.size(3) == rank &&
                  state.stride(3) == 1 && state.stride(2) == rank && state.stride(1) == rank * rank,
              "state must be float32 [B, N, r, r] with each row's block contiguous");
  const bool* write_ptr = nullptr;
  if (write.has_value()) {
    TORCH_CHECK(write->scalar_type() == at::kBool && write->is_contiguous() && write->numel() == batch,
                "write must be a contiguous bool [B]");
    write_ptr = write->data_ptr<bool>();
  }
  at::Tensor reads = at::empty({batch, heads, rank}, x.options());
  at::Tensor new_state = at::empty({batch, heads, rank, rank}, x.options());
  const float* bias = beta_bias.data_ptr<float>();
  const float* states = state.data_ptr<float>();
  float* out_reads = reads.data_ptr<float>();
  float* out_states = new_state.data_ptr<float>();
  // the projection: for a few rows plain dot products on this thread (a BLAS call may wake its thread pool,
  // which costs more than the ~18k multiply-adds of a row); for more rows one GEMM
  const bool small = batch <= kLoopRows;
  const at::Tensor projected = small ? at::Tensor() : at::mm(x, weight.t()).contiguous();  // [B, 4 * N * r]
  const float* xs = x.data_ptr<float>();
  const float* ws = weight.data_ptr<float>();
  std::vector<float> pre(4 * width), beta(rank);
  for (int64_t b = 0; b < batch; ++b) {
    if (small) {
      for (int64_t row = 0; row < 4 * width; ++row) pre[row] = dot(ws + row * dim, xs + b * dim, dim);
    } else {
      std::copy_n(projected.data_ptr<float>() + b * 4 * width, 4 * width, pre.data());
    }
    const float writes = write_ptr == nullptr || write_ptr[b] ? 1.f : 0.f;
    for (int64_t n = 0; n < heads; ++n) {
      float* q = pre.data() + n * rank;
      float* k = pre.data() + width + n * rank;
      const float* v = pre.data() + 2 * width + n * rank;
      const float* gate = pre.data() + 3 * width + n * rank;
      tanh_l2_normalise(q, rank);
      tanh_l2_normalise(k, rank);
      for (int64_t i = 0; i < rank; ++i) beta[i] = writes / (1.f + std::exp(-(gate[i] + bias[n * rank + i])));
      const float* s = states + b * state.stride(0) + n * rank * rank;
      float* s_new = out_states + (b * heads + n) * rank * rank;
      for (int64_t i = 0; i < rank; ++i) {
        const float* s_row = s + i * rank;
        float read = 0.f, s_k = 0.f;
        for (int64_t j = 0; j < rank; ++j) {
          read += s_row[j] * q[j];
          s_k += s_row[j] * k[j];
        }
        out_reads[(b * heads + n) * rank + i] = read;
        const float keep = 1.f - beta[i], add = beta[i] * (v[i] - s_k);
        for (int64_t j = 0; j < rank; ++j) s_new[i * rank + j] = keep * s_row[j] + add * k[j];
      }
    }
  }
  return {reads, new_state};
}

// Both low-rank corrections of a decode token from its reads: scale · reads · Wdqᵀ and scale · reads · Wdoᵀ, one
// call instead of two small GEMMs (~9k multiply-adds per layer at batch 1).
std::tuple<at::Tensor, at::Tensor> corrections_cpu(const at::Tensor& reads, const at::Tensor& delta_q,
                                                   const at::Tensor& delta_o, double scale) {
  TORCH_CHECK(reads.dim() == 2 && reads.scalar_type() == at::kFloat && reads.is_contiguous(),
              "reads must be contiguous float32 [B, N*r]");
  const int64_t batch = reads.size(0), width = reads.size(1);
  for (const at::Tensor* weight : {&delta_q, &delta_o}) {
    TORCH_CHECK(weight->dim() == 2 && weight->scalar_type() == at::kFloat && weight->is_contiguous() &&
                    weight->size(1) == width,
                "correction weights must be contiguous float32 [D, N*r]");
  }
  std::tuple<at::Tensor, at::Tensor> out{at::empty({batch, delta_q.size(0)}, reads.options()),
                                         at::empty({batch, delta_o.size(0)}, reads.options())};
  const float* m = reads.data_ptr<float>();
  const float factor = static_cast<float>(scale);
  for (auto [weight, result] : {std::pair{&delta_q, &std::get<0>(out)}, std::pair{&delta_o, &std::get<1>(out)}}) {
    const float* w = weight->data_ptr<float>();
    float* c = result->data_ptr<float>();
    const int64_t rows = weight->size(0);
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t row = 0; row < rows; ++row) {
        float acc = 0.f;
        for (int64_t i = 0; i < width; ++i) acc += w[row * width + i] * m[b * width + i];
        c[b * rows + row] = factor * acc;
      }
    }
  }
  return out;
}

}  // namespace

TORCH_LIBRARY(deltamem, m) {
  m.def("decode_step_cpu(Tensor x, Tensor weight, Tensor beta_bias, Tensor state, Tensor? write, int heads, "
        "int rank) -> (Tensor, Tensor)");
  m.def("corrections_cpu(Tensor reads, Tensor delta_q, Tensor delta_o, float scale) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(deltamem, CPU, m) {
  m.impl("decode_step_cpu", &decode_step_cpu);
  m.impl("corrections_cpu", &corrections_cpu);
}
