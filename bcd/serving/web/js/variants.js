// The variant choice beside the threshold: the endpoint's production variants, default first.

import { request } from "./api.js";

// The endpoint's variants ({name, model, weight, threshold}), the default (heaviest) first,
// and whether unpinned requests are split between several of them.
export async function loadVariants(endpoint) {
  const listing = await request("GET", "/endpoints");
  const name = endpoint || listing.DefaultEndpoint;
  const described = (listing.Endpoints || []).find((item) => item.EndpointName === name);
  const variants = (described ? described.ProductionVariants : []).map((variant, index) => ({
    name: variant.VariantName,
    model: variant.ModelName,
    weight: Number(variant.CurrentWeight) || 0,
    threshold: typeof variant.DecisionThreshold === "number" ? variant.DecisionThreshold : null,
    index,
  }));
  variants.sort((a, b) => b.weight - a.weight || a.index - b.index);
  const split = variants.filter((variant) => variant.weight > 0).length > 1;
  return { endpoint: name, variants, split };
}

// Fill the <select>: one option per variant, default first; a split endpoint first offers
// "by traffic weight" (no header). Keeps the current choice when the endpoint still has it.
export function fillVariantChoice(select, info) {
  const previous = select.value;
  select.replaceChildren();
  const add = (value, text) => {
    const option = document.createElement("option");
    option.value = value;
    option.textContent = text;
    select.append(option);
  };
  if (!info.variants.length) {
    add("", "Endpoint default");
  } else if (info.split) {
    add("", "By traffic weight (endpoint default)");
  }
  info.variants.forEach((variant, index) => {
    const isDefault = index === 0 && !info.split;
    add(variant.name, `${variant.name}${isDefault ? " (default)" : ""} — model ${variant.model}`);
  });
  if ([...select.options].some((option) => option.value === previous)) select.value = previous;
  select.disabled = info.variants.length < 2;
}

// The chosen variant's entry, or null for "endpoint default".
export function chosenVariant(select, info) {
  return info.variants.find((variant) => variant.name === select.value) || null;
}
