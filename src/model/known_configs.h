// config.json texts of the released models (§1.1: Flash, Pro) and the structural tiny model
// (§15.1), for the skeleton generator, `dsv4 inspect` family detection and tests.
// Parsing is config.cpp's; this file only holds the texts.
#pragma once

#include <string>

namespace dsv4 {

std::string flash_config_json();  // deepseek-ai/DeepSeek-V4-Flash (instruct, FP8 + MXFP4)
std::string pro_config_json();    // deepseek-ai/DeepSeek-V4-Pro
std::string tiny_config_json();   // §15.1 structural tiny model, quantised variant

}  // namespace dsv4
