import type { OpenAPIObject } from "trpc-to-openapi";

/**
 * The OpenAPI document as plain text blocks for the /api/docs page, which
 * renders on the server without any script (nothing loads from elsewhere).
 */

type Schema = Record<string, unknown>;

export interface DocParameter {
  name: string;
  in: string;
  required: boolean;
  type: string;
  description: string;
}

export interface DocResponse {
  status: string;
  description: string;
  body: string | null;
}

export interface DocOperation {
  id: string;
  method: string;
  path: string;
  summary: string;
  description: string;
  tags: string[];
  parameters: DocParameter[];
  requestBody: string | null;
  responses: DocResponse[];
}

export interface DocPage {
  title: string;
  description: string;
  version: string;
  baseUrl: string;
  operations: DocOperation[];
  schemas: Array<{ name: string; body: string }>;
}

function refName(ref: string): string {
  return ref.split("/").pop() ?? ref;
}

/** A TypeScript-like rendering of a JSON schema, resolving component refs one level deep. */
function render(schema: Schema | undefined, components: Record<string, Schema>, indent = "", depth = 0): string {
  if (!schema) return "unknown";
  if (typeof schema.$ref === "string") {
    const name = refName(schema.$ref);
    return depth === 0 && components[name] ? render(components[name], components, indent, depth + 1) : name;
  }
  const union = (schema.anyOf ?? schema.oneOf) as Schema[] | undefined;
  if (union) return union.map((s) => render(s, components, indent, depth)).join(" | ");
  if (schema.const !== undefined) return JSON.stringify(schema.const);
  if (Array.isArray(schema.enum)) return schema.enum.map((v) => JSON.stringify(v)).join(" | ");
  const type = schema.type;
  if (Array.isArray(type)) return type.map((t) => render({ ...schema, type: t }, components, indent, depth)).join(" | ");
  if (type === "array") return `Array<${render(schema.items as Schema, components, indent, depth + 1)}>`;
  if (type === "object" || schema.properties) {
    const properties = (schema.properties ?? {}) as Record<string, Schema>;
    const required = new Set((schema.required as string[] | undefined) ?? []);
    const names = Object.keys(properties);
    if (names.length === 0) return schema.additionalProperties === false ? "{}" : "{ [key: string]: unknown }";
    const inner = `${indent}  `;
    const lines = names.map((name) => {
      const property = properties[name];
      const note = typeof property.description === "string" ? `  // ${property.description}` : "";
      return `${inner}${name}${required.has(name) ? "" : "?"}: ${render(property, components, inner, depth + 1)};${note}`;
    });
    return `{\n${lines.join("\n")}\n${indent}}`;
  }
  if (type === "string" && typeof schema.format === "string") return `string (${schema.format})`;
  if (typeof type === "string") return type;
  return "unknown";
}

export function docPage(document: OpenAPIObject): DocPage {
  const components = (document.components?.schemas ?? {}) as Record<string, Schema>;
  const responses = (document.components?.responses ?? {}) as unknown as Record<string, Schema>;
  const operations: DocOperation[] = [];
  for (const [path, item] of Object.entries(document.paths ?? {})) {
    for (const method of ["get", "post", "put", "patch", "delete"] as const) {
      const op = (item as Record<string, Schema | undefined>)[method];
      if (!op) continue;
      const parameters = ((op.parameters as Schema[] | undefined) ?? []).map((p) => ({
        name: String(p.name),
        in: String(p.in),
        required: Boolean(p.required),
        type: render(p.schema as Schema, components),
        description: String((p.description ?? (p.schema as Schema | undefined)?.description) || ""),
      }));
      const bodySchema = ((op.requestBody as Schema | undefined)?.content as Record<string, Schema> | undefined)?.["application/json"]?.schema;
      const opResponses = Object.entries((op.responses ?? {}) as Record<string, Schema>).map(([status, response]) => {
        const resolved = typeof response.$ref === "string" ? (responses[refName(response.$ref)] ?? response) : response;
        const schema = (resolved.content as Record<string, Schema> | undefined)?.["application/json"]?.schema as Schema | undefined;
        return { status, description: String(resolved.description ?? ""), body: schema && Object.keys(schema).length > 0 ? render(schema, components) : null };
      });
      operations.push({
        id: String(op.operationId ?? `${method}-${path}`),
        method: method.toUpperCase(),
        path,
        summary: String(op.summary ?? ""),
        description: String(op.description ?? ""),
        tags: (op.tags as string[] | undefined) ?? [],
        parameters,
        requestBody: bodySchema ? render(bodySchema as Schema, components) : null,
        responses: opResponses,
      });
    }
  }
  return {
    title: document.info.title,
    description: document.info.description ?? "",
    version: document.info.version,
    baseUrl: String(document.servers?.[0]?.url ?? "/api"),
    operations,
    schemas: Object.keys(components).map((name) => ({ name, body: render(components[name], components, "", 1) })),
  };
}
