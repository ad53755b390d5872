/** The `meshgate` package: `import { defineMesh, translate } from "meshgate"`. */
export * from "./components/index.ts";
