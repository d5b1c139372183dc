// prefill_flops (model/model_summary.h) on the released Flash config, against numbers written out
// by hand from its shapes (§1.1): 43 layers (2 sliding, 21 CSA, 20 HCA), 64 heads × 512,
// W = 128, K_top = 512, indexer 64 heads × 128, vocab 129,280 × hidden 4,096.
#include <gtest/gtest.h>

#include "model/config.h"
#include "model/known_configs.h"
#include "model/model_summary.h"

namespace dsv4 {
namespace {

constexpr double kHidden = 4096, kHead = 129280.0 * 4096;  // the LM head's parameters
constexpr double kPerKey = 4.0 * 64 * 512;                 // Q·K and P·V, 64 heads × 512
constexpr double kPerIndexKey = 2.0 * 64 * 128;            // the indexer's 64 heads × 128

class PrefillFlops : public ::testing::Test {
 protected:
  const ModelConfig flash = ModelConfig::from_json(flash_config_json());
  // The linear FLOPs of one token that is not the last: every active parameter but the
  // embedding row and the head, twice.
  const double linear = 2.0 * (double(count_parameters(flash).active) - kHidden - kHead);
};

TEST_F(PrefillFlops, FlashActiveParametersAreTheModelCards) {
  EXPECT_GT(count_parameters(flash).active, 13.0e9);  // "13B activated"
  EXPECT_LT(count_parameters(flash).active, 13.5e9);
}

TEST_F(PrefillFlops, OneTokenAttendsItselfInEveryLayer) {
  // Position 0: one window key per layer, no compressed entry yet ((0+1)/4 = 0), and the head.
  EXPECT_DOUBLE_EQ(prefill_flops(flash, 1), linear + 2 * kHead + 43 * kPerKey);
  EXPECT_EQ(prefill_flops(flash, 0), 0.0);
}

TEST_F(PrefillFlops, TheTokenAt8191CostsItsKeys) {
  // Position 8,191: 128 window keys in every layer; CSA attends min(512, 8192/4 = 2,048) picks and
  // its indexer scores all 2,048 entries; HCA attends 8192/128 = 64 entries.
  const double token = linear + 43 * 128 * kPerKey + 21 * (512 * kPerKey + 2048 * kPerIndexKey) + 20 * 64 * kPerKey;
  const double step = prefill_flops(flash, 8192) - prefill_flops(flash, 8191);
  EXPECT_NEAR(step, token, 1e-12 * prefill_flops(flash, 8192));
}

TEST_F(PrefillFlops, EarlyPositionsSeeFewerKeys) {
  // Position 3: 4 window keys, CSA's first entry ((3+1)/4 = 1: one pick, one indexed), no HCA entry.
  const double token = linear + 43 * 4 * kPerKey + 21 * (kPerKey + kPerIndexKey);
  EXPECT_NEAR(prefill_flops(flash, 4) - prefill_flops(flash, 3), token, 1e-12 * prefill_flops(flash, 4));
}

}  // namespace
}  // namespace dsv4
