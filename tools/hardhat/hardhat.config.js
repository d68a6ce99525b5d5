// Hardhat's node (EDR) as gpumesh's second EVM node: the integration and end-to-end tests run
// unchanged against it (GPUMESH_TEST_CHAIN=hardhat; client/chain/hardhat.py starts it). Same chain id,
// the same dev mnemonic as anvil (so the dev accounts are the same), one block per transaction, and
// the hardfork the contracts are compiled for (foundry.toml: evm_version = "cancun").
module.exports = {
  networks: {
    hardhat: {
      chainId: 31337,
      hardfork: "cancun",
      accounts: { mnemonic: "test test test test test test test test test test test junk", count: 10 },
      mining: { auto: true },
      // like a real node: a transaction that reverts is mined with status 0 and its hash returned
      // (Hardhat's default answers eth_sendRawTransaction with the revert instead)
      throwOnTransactionFailures: false,
    },
  },
};
