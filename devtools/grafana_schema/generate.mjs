// Builds dashboard-<grafana version>.schema.json (JSON Schema draft-07) from the
// TypeScript types of the pinned @grafana/schema package, with
// ts-json-schema-generator, then applies the post-processing below.
// Run through generate.sh (it installs the pinned packages first).
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

const require = createRequire(import.meta.url);
const { createGenerator } = require("ts-json-schema-generator");

const HERE = path.dirname(fileURLToPath(import.meta.url));
const version = (name) =>
  JSON.parse(fs.readFileSync(path.join(HERE, "node_modules", name, "package.json"), "utf8")).version;
const GRAFANA = version("@grafana/schema");
const GENERATOR = version("ts-json-schema-generator");
const RAW = path.join(HERE, "node_modules/@grafana/schema/dist/esm/raw");
const OUT = path.join(HERE, `dashboard-${GRAFANA}.schema.json`);

const DASHBOARD_FILE = "dashboard/x/dashboard_types.gen.d.ts";
// Panel plugins whose `options` and `fieldConfig.defaults.custom` are validated.
const PANEL_PLUGINS = {
  timeseries: {
    file: "composable/timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen.d.ts",
    options: "TimeSeriesOptions",
    custom: "TimeSeriesFieldConfig",
  },
  // The stat plugin declares no FieldConfig: its custom field config is empty.
  stat: { file: "composable/stat/panelcfg/x/StatPanelCfg_types.gen.d.ts", options: "StatOptions", custom: null },
};
// Panel types also accepted, with their options left unchecked. Anything else
// (e.g. `graph`, removed in Grafana 12) is rejected.
const UNCHECKED_PANEL_TYPES = ["bargauge", "gauge", "table", "text"];

// [file under raw/, exported type, definition name in the output]
const JOBS = [
  [DASHBOARD_FILE, "Dashboard", "Dashboard"],
  [PANEL_PLUGINS.timeseries.file, "Options", "TimeSeriesOptions"],
  [PANEL_PLUGINS.timeseries.file, "FieldConfig", "TimeSeriesFieldConfig"],
  [PANEL_PLUGINS.stat.file, "Options", "StatOptions"],
];

const REF = "#/definitions/";
const ref = (name) => ({ $ref: REF + name });
// "Record<string,unknown>" -> "Record_string_unknown": refs stay plain JSON pointers.
const safeName = (name) => name.replace(/[^A-Za-z0-9_.]+/g, "_").replace(/_+$/, "");

function walk(node, fn) {
  if (Array.isArray(node)) node.forEach((child) => walk(child, fn));
  else if (node && typeof node === "object") {
    fn(node);
    Object.values(node).forEach((child) => walk(child, fn));
  }
}

function canonical(value) {
  if (Array.isArray(value)) return value.map(canonical);
  if (value && typeof value === "object") {
    return Object.fromEntries(
      Object.keys(value)
        .sort()
        .map((key) => [key, canonical(value[key])]),
    );
  }
  return value;
}

function must(value, what) {
  if (value === undefined) throw new Error(`@grafana/schema ${GRAFANA}: ${what} not found; update generate.mjs`);
  return value;
}

// 1. Generate each root type and merge the definitions into one namespace.
const definitions = {};
for (const [file, type, as] of JOBS) {
  const generator = createGenerator({
    path: path.join(RAW, file),
    tsconfig: path.join(HERE, "tsconfig.json"),
    type,
    expose: "all",
    topRef: true,
    jsDoc: "extended",
    encodeRefs: false,
    sortProps: true,
    skipTypeCheck: false,
  });
  const schema = generator.createSchema(type);
  const rename = (name) => (name === type ? as : safeName(name));
  walk(schema.definitions, (node) => {
    if (typeof node.$ref === "string" && node.$ref.startsWith(REF)) node.$ref = REF + rename(node.$ref.slice(REF.length));
  });
  for (const [name, def] of Object.entries(schema.definitions)) {
    const key = rename(name);
    if (key in definitions && JSON.stringify(canonical(definitions[key])) !== JSON.stringify(canonical(def))) {
      throw new Error(`definition ${key} differs between generated types`);
    }
    definitions[key] = def;
  }
}

function reachable(roots) {
  const seen = new Set();
  const visit = (name) => {
    if (seen.has(name)) return;
    seen.add(name);
    walk(must(definitions[name], `definition ${name}`), (node) => {
      if (typeof node.$ref === "string") visit(node.$ref.slice(REF.length));
    });
  };
  roots.forEach(visit);
  return seen;
}

// 2. Grafana fills panel option defaults, so nothing inside panel options or
//    custom field config is required (unknown keys still fail).
const fromDashboard = reachable(["Dashboard"]);
const panelRoots = Object.values(PANEL_PLUGINS).flatMap((p) => [p.options, p.custom].filter(Boolean));
for (const name of reachable(panelRoots)) {
  if (fromDashboard.has(name)) throw new Error(`${name} is shared by the dashboard and panel types`);
  walk(definitions[name], (node) => {
    if (Array.isArray(node.required)) delete node.required;
  });
}

// 3. Fields Grafana 12.0 writes on variables that its own schema lacks.
const variable = must(definitions.VariableModel, "VariableModel");
Object.assign(variable.properties, {
  definition: { type: "string", description: "Query variables: the query as text (written by Grafana, not in @grafana/schema)." },
  auto: { type: "boolean", description: "Interval variables: add an auto option (written by Grafana, not in @grafana/schema)." },
  auto_count: { type: "integer", description: "Interval variables: number of steps for auto (written by Grafana, not in @grafana/schema)." },
  auto_min: { type: "string", description: "Interval variables: minimum auto interval (written by Grafana, not in @grafana/schema)." },
});
for (const key of ["datasource", "description"]) {
  // Their doc comments say "It can be defined but `null`", which the TS types lost.
  const prop = must(variable.properties[key], `VariableModel.${key}`);
  const { description, ...rest } = prop;
  variable.properties[key] = { description, anyOf: [rest, { type: "null" }] };
}
// `current` may be saved as {} before a variable has a value.
delete must(definitions.VariableOption, "VariableOption").required;

// 4. Panels: a `row` is a RowPanel, anything else a Panel whose type must be one
//    of the known plugins; timeseries/stat options are checked per type.
const dashboard = definitions.Dashboard;
must(dashboard.properties.panels, "Dashboard.panels").items = {
  if: { properties: { type: { const: "row" } }, required: ["type"] },
  then: ref("RowPanel"),
  else: ref("Panel"),
};
const panel = must(definitions.Panel, "Panel");
panel.properties.type = {
  description: must(panel.properties.type, "Panel.type").description,
  enum: [...Object.keys(PANEL_PLUGINS), ...UNCHECKED_PANEL_TYPES].sort(),
};
panel.allOf = Object.entries(PANEL_PLUGINS).map(([type, plugin]) => ({
  if: { properties: { type: { const: type } }, required: ["type"] },
  then: {
    properties: {
      options: ref(plugin.options),
      fieldConfig: {
        properties: {
          defaults: {
            properties: {
              custom: plugin.custom ? ref(plugin.custom) : { type: "object", additionalProperties: false },
            },
          },
        },
      },
    },
  },
}));
// Panel links are data links ({title, url, targetBlank}), not DashboardLinks
// as the TS type says.
definitions.PanelLink = {
  description: "A panel link (Grafana data link); replaces the DashboardLink of the TS type.",
  type: "object",
  additionalProperties: false,
  properties: {
    oneClick: { type: "boolean" },
    targetBlank: { type: "boolean" },
    title: { type: "string" },
    url: { type: "string" },
  },
  required: ["title", "url"],
};
must(panel.properties.links, "Panel.links").items = ref("PanelLink");

// 5. Field config: Grafana fills `defaults`/`overrides`, and overrides made by
//    clicking a legend entry carry `__systemRef`.
const fieldConfigSource = must(definitions.FieldConfigSource, "FieldConfigSource");
delete fieldConfigSource.required;
must(fieldConfigSource.properties.overrides, "FieldConfigSource.overrides").items.properties.__systemRef = {
  type: "string",
};

// 6. gnetId: dashboards imported from grafana.com carry it as a number.
const gnetId = must(dashboard.properties.gnetId, "Dashboard.gnetId");
dashboard.properties.gnetId = { description: gnetId.description, type: ["string", "integer", "null"] };

// 7. Every $ref resolves; write the file deterministically.
walk(definitions, (node) => {
  if (typeof node.$ref === "string") must(definitions[node.$ref.slice(REF.length)], `target of ${node.$ref}`);
});
const output = canonical({
  $comment: `Generated from @grafana/schema ${GRAFANA} (Apache-2.0, Grafana Labs) by ts-json-schema-generator ${GENERATOR}; do not edit, run devtools/grafana_schema/generate.sh`,
  $schema: "http://json-schema.org/draft-07/schema#",
  $ref: REF + "Dashboard",
  definitions,
});
fs.writeFileSync(`${OUT}.tmp`, JSON.stringify(output, null, 2) + "\n");
fs.renameSync(`${OUT}.tmp`, OUT);
console.log(`wrote ${path.relative(process.cwd(), OUT)} (${Object.keys(definitions).length} definitions)`);
