# ctest's start order (an include file of the build's CTestTestfile, after the discovered tests):
# with -j, ctest starts tests in decreasing COST, and a fresh build has no timing history of its
# own, so without this the longest tests start wherever they fall in the list and one runs on
# alone at the end (CI, 2 cores: the release tests took 259 s for 379 s of test time). Only the
# order changes, never what runs. Seconds as measured in CI (the larger of the release and the
# sanitizer run); a name that no longer exists is ignored, a new slow test should be added.
# The server's Python tests have theirs in CMakeLists.txt.
foreach(test_and_seconds
  "engine.SpeculativeNano.GreedyEqualsPlainGreedyBitForBitWithPreemption 59"
  "engine.SchedulerCpu.LogitsDoNotDependOnTheBatch 34"
  "cpu.Cpu/ChunkingTest.AnyChunkingEqualsOnePrefill/bf16_exact 33"
  "cli.Perplexity.NanoMatchesHfTransformers 29"
  "cpu.CpuForward.BatchResetAndCausality 29"
  "cpu.Rollback.NanoRejectedDraftsLeaveNoTrace 28"
  "cpu.OfficialBf16.AnyChunkingEqualsOnePrefillBitForBit 26"
  "cpu.OfficialBf16.CloseToOfficialButNotEqual 26"
  "engine.SchedulerCpu.ShortRequestsEqualSoloRunsAndReturnEveryBlock 26"
  "cli.Compare.ExactVsOfficialMatchesLogitsOfBothModes 25"
  "cli.SpeculativeFlag.GreedyGenerateIsTheSameWithAnyDraftCount 24"
  "cpu.Cpu/RollbackTest.RejectedDraftsLeaveNoTrace/bf16_exact 23"
  "cpu.Cpu/ChunkingTest.AnyChunkingEqualsOnePrefill/quant_official 22"
  "cpu.Fixtures/Parity.Official/flash_bf16 22"
  "cpu.Cpu/ChunkingTest.AnyChunkingEqualsOnePrefill/quant_exact 21"
  "engine.SpeculativeNano.SamplingRunsAndIsReproducible 21"
  "cli.ContextLimits.ProgressLines 20"
  "cli.InspectFlash.HostTierKeepsTheFewestExpertsThatFit 20"
  "engine.SpeculativeScheduler.SampledOutputKeepsItsDistribution 20"
  "cpu.Fixtures/Parity.Official/flash_quant 19"
  "cpu.Cpu/RollbackTest.RejectedDraftsLeaveNoTrace/quant_official 17"
  "cpu.Fixtures/Parity.Exact/flash_bf16 17"
  "cpu.Fixtures/Parity.Exact/flash_quant 17"
  "cpu.OfficialBf16.TracedActivationsAreBf16 17"
  "engine.SpeculativeRule.EveryEmittedTokenFollowsTheFilteredTargetDistribution 15"
  "cli.InspectFlash.SummaryAndVerifyPass 14"
  "cpu.Cpu/RollbackTest.RejectedDraftsLeaveNoTrace/quant_official_bf16_window8 14"
  "cli.Compare.IdenticalRunsAgreeExactlyInForwardOrder 13"
  "cpu.Fixtures/Parity.Exact/pro_bf16 12"
  "cpu.Fixtures/Parity.Official/pro_bf16 12"
  "cpu.Fixtures/Parity.Exact/pro_quant 11"
  "cpu.Selections/CpuNvfp4Forward.EqualsTheDequantisedModel/experts 11"
  "cli.TokenizeCli.EncodesAndDecodes 10"
  "cpu.Fixtures/Parity.Official/pro_quant 10"
  "cpu.Selections/CpuNvfp4Forward.EqualsTheDequantisedModel/named_dense 10"
  "cli.InspectFlash.MissingTensor 8"
  "cli.SamplingFlags.EachFlagChangesWhatGenerateDoes 8"
  "cpu.NanoParity.ExactChunk129 8"
  "cpu.NanoParity.ExactWhole 8"
  "cpu.Selections/CpuNvfp4Forward.EqualsTheDequantisedModel/all_linears 8"
  "tokenizer.PreTokenizer.EveryCodePointSplitsLikeHf 8"
  "cli.InspectFlash.WrongShape 7"
  "cli.TokenizeCli.InvalidUtf8FileWarnsAndEncodesReplacement 7"
  "cpu.NanoParity.OfficialWhole 7"
  "engine.SamplingFlags.TemperatureOneDiffersAndEachNarrowFilterGivesGreedy 7"
  "cli.InspectFlash.TruncatedShard 6"
  "cli.Logits.FixtureMatchesHfGolden 6"
  "cli.Encode.RealTokenizerIdsMatchTheDocumentedOnes 5"
  "cli.InspectFlash.OverlappingOffsets 5"
  )
  string(REPLACE " " ";" pair "${test_and_seconds}")
  list(GET pair 0 name)
  list(GET pair 1 seconds)
  set_tests_properties("${name}" PROPERTIES COST ${seconds})
endforeach()
