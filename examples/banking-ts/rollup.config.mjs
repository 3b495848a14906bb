// Bundles src/endpoints.ts and what it imports (its lib modules, @microsoft/ccf-app)
// as ES modules, one output file per input module (preserveModules), into dist/src/,
// and copies app.json to dist/: dist/ is then an app directory for
// `covenant dev --app dist` or `covenant gov set-js-app dist`.
import { copyFileSync, mkdirSync } from "node:fs";
import nodeResolve from "@rollup/plugin-node-resolve";
import typescript from "@rollup/plugin-typescript";

const appJson = {
  name: "app-json",
  writeBundle() {
    mkdirSync("dist", { recursive: true });
    copyFileSync("app.json", "dist/app.json");
  },
};

export default {
  input: "src/endpoints.ts",
  output: {
    dir: "dist/src",
    format: "es",
    preserveModules: true,
    preserveModulesRoot: "src",
  },
  plugins: [nodeResolve(), typescript(), appJson],
};
