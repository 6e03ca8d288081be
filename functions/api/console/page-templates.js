// Templates (decision 0089). Not written yet: the section shows what the API
// lists, and links to it.

import { h, replace } from "./ui.js";

export async function render(main) {
  replace(main, h("h1", {}, "Templates"), h("p", { class: "muted" }, "This section is not built yet."));
}
